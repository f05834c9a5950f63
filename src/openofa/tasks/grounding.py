"""Visual grounding (RefCOCO, RefCOCO+, RefCOCOg): find the region a phrase describes.

The image is resized to 512x512 (aspect ratio not kept, as in the original), the phrase goes into
the prompt ' which region does the text " {} " describe?' (Chinese: '这段文字" {} "描述的是哪个区域？'),
and the model emits four location tokens ``<bin_x1> <bin_y1> <bin_x2> <bin_y2>`` (beam 5, exactly
4 tokens, no repeated trigram).
Unlike the original we restrict decoding to location tokens by default (the original's evaluation
does not, and can return text or a negative box) and to ordered boxes (the x2 and y2 bins greater
than x1 and y1: beam search prunes the candidates that would invert or empty the box, leaving the
scores of the others as they are), and return the box in original-image pixels, clamped to the
image, or no box when a token is not a location. The original's path stays
available: ``restrict_to_bins=False`` decodes unconstrained as its evaluation script does (no
ordering either), and ``faithful=True`` decodes without the ordering and converts the first four tokens to pixels as the original does, whatever they are
(``(token - bin_0) / (num_bins - 1) * max_image_size / resize ratio``, no clamping).

A model whose task settings say ``ground_prompt_type: prev_output`` (the project's small model;
not an official checkpoint) was trained with the prompt as a decoder prefix too, as VQA is: the
prefix is forced, and the four location tokens follow it. Trained on the box's four location
tokens; scored by Acc@0.5 (IoU of at least 0.5 with the reference box).
"""

from __future__ import annotations

import torch

from openofa.errors import OFAError
from openofa.tasks.base import IMAGE, Example, Field, Task, layout, prompt_prefix
from openofa.text.tokenizer import pre_caption

PROMPT = ' which region does the text " {} " describe?'
PROMPT_ZH = '这段文字" {} "描述的是哪个区域？'


def source(tok, text: str, max_words: int) -> list[int]:
    """bos + the grounding prompt around the normalised expression + eos (Chinese ones too are
    normalised with ``pre_caption``, as the original's datasets do)."""
    prompt = PROMPT_ZH if tok.language == "zh" else PROMPT
    return tok.encode(prompt.format(pre_caption(text, max_words)), bos=True, eos=True)


def _read(rec, fields, where, targets):
    from openofa.data.records import BadRow, field_text, parse_box_field

    rec.text = field_text(fields, "text", where)
    if "box" in fields:
        rec.box = parse_box_field(fields["box"], where)
    elif targets:
        raise BadRow(f"{where}: missing field 'box'", "box")


class Grounding(Task):
    name = "ground"
    help = "find the box a phrase refers to"
    aliases = ("refcoco", "refcocoplus", "refcocog", "grounding", "visual_grounding")
    inputs = (IMAGE, Field("text", "text", "the referring expression", required=True, short="-t"))
    options = (Field("restrict_to_bins", "bool", "decode over the whole vocabulary like the original "
                     "(default: location tokens only)", default=True, flag="--any-token", negate=True),
               Field("faithful", "bool", "convert the four tokens to pixels as the original does, whatever "
                     "they are (no clamping; default: a box only from location tokens, clamped to the image)"))
    # refcoco{,+,g}_{train,val,testA,testB,test}.tsv: uniq-id, image-id, text, "x1,y1,x2,y2", image
    layouts = (layout("ground", ["id", "image", "text", "box"], [0, 4, 2, 3], owner="ground", targets=["box"],
                      read=_read, max_src_length=80, max_tgt_length=20, patch_image_size=512,
                      settings={"max_image_size": 512},
                      doc="uniq-id, image-id, referring expression, box x1,y1,x2,y2, image"),)
    image_size = 512
    generation = dict(beam_size=5, min_len=4, max_len_a=0, max_len_b=4, no_repeat_ngram_size=3)
    max_src_length = 80
    max_image_size = 512
    output = "box"
    metric_name = "Acc@0.5"
    draws = True
    image_mode = "refcoco"
    prompt_setting = "ground_prompt_type"  # not the original's: the project's small model's choice

    def settings_apply(self, ofa) -> bool:
        """Whether the loaded settings were made for grounding (a RefCOCO checkpoint, ours, or a
        zero-shot run): a captioning file's image side and ``max_image_size`` do not apply."""
        if ofa.zero_shot:
            return True
        name = str(ofa.task_settings.get("_name", "refcoco"))
        return "max_image_size" in ofa.task_settings and name.startswith("refcoco")

    def prepare(self, ofa, image, text: str) -> Example:
        if not text.strip():
            raise OFAError("ground: the referring expression is empty")
        ofa.warn_unknown(self.name, "expression", text)
        tensor, w, h = ofa.image_tensor(image, self, return_size=True)
        size = tensor.shape[-1]
        src = source(ofa.tokenizer, text, int(ofa.setting(self.name, "max_src_length", self.max_src_length)))
        prefix = prompt_prefix(src, ofa.task_settings.get(self.prompt_setting, "none"), "ground",
                               ("prev_output", "none"), setting=self.prompt_setting)
        return Example(src, tensor, prefix, info={"w": w, "h": h, "w_ratio": size / w, "h_ratio": size / h})

    def _generate(self, ofa, examples, rng, options):
        """Hypotheses in input order; examples with a prefix are decoded in groups of one prefix
        length, their length limits counted after the prefix."""
        if not any(ex.prefix for ex in examples):
            return ofa.generate(examples, self.generation, task=self.name, constraint_range=rng, **options)
        settings = ofa.decoding(self.generation, self.name, **options)
        groups: dict[int, list[int]] = {}
        for i, ex in enumerate(examples):
            groups.setdefault(len(ex.prefix), []).append(i)
        hypos = [None] * len(examples)
        for n, idx in groups.items():
            opts = {**options, "min_len": settings["min_len"] + n, "max_len_b": settings["max_len_b"] + n}
            for i, h in zip(idx, ofa.generate([examples[i] for i in idx], self.generation, task=self.name,
                                              constraint_range=rng, **opts)):
                hypos[i] = h
        return hypos

    def predict(self, ofa, examples, restrict_to_bins: bool = True, faithful: bool = False, **options):
        cfg = ofa.model.config
        rng = (cfg.bin_0, cfg.vocab_size) if restrict_to_bins else None
        if restrict_to_bins and not faithful:  # our default: only ordered, non-empty boxes
            options = {"ordered_box": (cfg.bin_0, cfg.num_bins), **options}
        hypos = self._generate(ofa, examples, rng, options)
        max_size = float(ofa.setting(self.name, "max_image_size", self.max_image_size)) \
            if self.settings_apply(ofa) else self.max_image_size
        out = []
        for ex, h in zip(examples, hypos):
            ids = h.tokens[:-1] if len(h.tokens) and int(h.tokens[-1]) == cfg.eos else h.tokens
            ids = [int(t) for t in ids[len(ex.prefix):]]
            bins = [t - cfg.bin_0 for t in ids[:4]]
            info = ex.info
            if faithful and len(bins) == 4:  # the original's conversion, for any token
                v = [b / (cfg.num_bins - 1) * max_size for b in bins]
                box = [v[0] / info["w_ratio"], v[1] / info["h_ratio"], v[2] / info["w_ratio"], v[3] / info["h_ratio"]]
                out.append({"box": box, "score": h.score, "tokens": ids})
                continue
            if len(bins) < 4 or any(b < 0 or b >= cfg.num_bins for b in bins):
                out.append({"box": None, "score": h.score, "tokens": ids})
                continue
            v = [b / (cfg.num_bins - 1) * max_size for b in bins]
            box = [v[0] / info["w_ratio"], v[1] / info["h_ratio"], v[2] / info["w_ratio"], v[3] / info["h_ratio"]]
            box = [min(max(box[0], 0.0), info["w"]), min(max(box[1], 0.0), info["h"]),
                   min(max(box[2], 0.0), info["w"]), min(max(box[3], 0.0), info["h"])]
            out.append({"box": box, "score": h.score})
        return out

    def format(self, result):
        box = result["box"]
        return "none" if box is None else " ".join(f"{v:.1f}" for v in box)

    def boxes(self, result):
        return [] if result["box"] is None else [(result["box"], "")]

    def sample(self, b, r):
        out, tgt = b.box_image(r)
        src = source(b.tok, r.text, b.max_src_length)
        sample = b.sample(r, src, list(tgt), out.patch_image,
                          w_resize_ratio=out.w_resize_ratio, h_resize_ratio=out.h_resize_ratio,
                          region_coord=torch.tensor(r.box, dtype=torch.float32),
                          attend_box=torch.tensor(out.box, dtype=torch.float32))
        if b.prompt_type != "none":  # not the original's grounding; our small model's choice
            sample.update(b.with_prompt(src, list(tgt)))
        return sample

    def reference(self, r):
        return list(r.box) if r.box is not None else None

    def inputs_of(self, r, layout):
        return {"image": r.image, "text": r.text}

    def metric(self, predictions, references, layout):
        from openofa.metrics import grounding_accuracy

        return {self.metric_name: grounding_accuracy(predictions, references)}
