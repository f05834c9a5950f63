"""Visual grounding (RefCOCO): find the region a phrase describes.

The image is resized to 512x512 (aspect ratio not kept, as in the original), the phrase goes into
the prompt ' which region does the text " {} " describe?', and the model emits four location
tokens ``<bin_x1> <bin_y1> <bin_x2> <bin_y2>`` (beam 5, exactly 4 tokens, no repeated trigram).
Unlike the original we restrict decoding to location tokens by default (the original's evaluation
does not, and can return text or a negative box), and return the box in original-image pixels,
clamped to the image, or no box when a token is not a location. The original's path stays
available: ``restrict_to_bins=False`` decodes unconstrained as its evaluation script does, and
``faithful=True`` converts the first four tokens to pixels as the original does, whatever they are
(``(token - bin_0) / (num_bins - 1) * max_image_size / resize ratio``, no clamping).

A model whose task settings say ``ground_prompt_type: prev_output`` (the project's small model;
not an official checkpoint) was trained with the prompt as a decoder prefix too, as VQA is: the
prefix is forced, and the four location tokens follow it.
"""

from __future__ import annotations

from openofa.tasks.base import Example, Task
from openofa.text.tokenizer import REFCOCO_PROMPT, REFCOCO_PROMPT_ZH, pre_caption


class Grounding(Task):
    name = "ground"
    image_size = 512
    generation = dict(beam_size=5, min_len=4, max_len_a=0, max_len_b=4, no_repeat_ngram_size=3)
    max_src_length = 80
    max_image_size = 512

    def prepare(self, ofa, image, text: str) -> Example:
        from openofa.errors import OFAError

        if not isinstance(text, str) or not text.strip():
            raise OFAError("ground: the referring expression is empty")
        tok = ofa.tokenizer
        tensor, w, h = ofa.image_tensor(image, self, return_size=True)
        size = tensor.shape[-1]
        # the expression normalised as the original's RefCOCO datasets do (Chinese ones too)
        text = pre_caption(text, int(ofa.setting(self.name, "max_src_length", self.max_src_length)))
        prompt = REFCOCO_PROMPT_ZH if tok.language == "zh" else REFCOCO_PROMPT
        src = tok.encode(prompt.format(text), bos=True, eos=True)
        prompt_type = ofa.task_settings.get("ground_prompt_type", "none")
        if prompt_type not in ("prev_output", "none"):
            raise OFAError(f"ground: ground_prompt_type {prompt_type!r} is not supported (prev_output or none)")
        prefix = src[1:-1] if prompt_type == "prev_output" else []
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
        hypos = self._generate(ofa, examples, rng, options)
        max_size = float(ofa.setting(self.name, "max_image_size", self.max_image_size)) \
            if ofa.grounding_settings() else self.max_image_size
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
