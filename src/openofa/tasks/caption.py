"""Image captioning (COCO): prompt " what does the image describe?" (Chinese: "图片描述了什么内容?"),
beam 5, at most 16 tokens, no repeated trigram; punctuation is stripped from English captions as
the original's evaluation does; Chinese captions keep their punctuation and are written without the
spaces the decoder puts between characters. Trained on the caption without punctuation (its first
``max_tgt_length`` words); scored by CIDEr-D against every reference.
"""

from __future__ import annotations

from openofa.tasks.base import IMAGE, Example, Task, layout
from openofa.text.tokenizer import caption_target_text, join_cjk, strip_punctuation

PROMPT = " what does the image describe?"
PROMPT_ZH = "图片描述了什么内容?"


def source(tok) -> list[int]:
    """bos + the caption prompt of the tokenizer's language + eos."""
    return tok.encode(PROMPT_ZH if tok.language == "zh" else PROMPT, bos=True, eos=True)


def _read(rec, fields, where, targets):
    from openofa.data.records import BadRow, field_str

    if "caption" not in fields and "captions" in fields:  # JSONL: a list of references
        caps = fields["captions"]
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise BadRow(f"{where}: 'captions' must be a non-empty list of strings", "field")
        fields = dict(fields, caption="&&".join(caps))
    rec.target = field_str(fields, "caption", where, required=targets)


class Caption(Task):
    name = "caption"
    help = "describe images"
    aliases = ("caption_stage1", "caption_stage2", "coco_caption")
    inputs = (IMAGE,)
    # caption_{stage1_train,stage2_train,val,test}.tsv:
    #   uniq-id, image-id, caption ("a&&b&&..." in val/test), predicted object labels, image base64
    layouts = (layout("caption", ["id", "image", "caption"], [0, 4, 2], owner="caption", targets=["caption"],
                      read=_read, max_src_length=80, max_tgt_length=20, patch_image_size=480,
                      doc="uniq-id, image-id, caption(s joined by &&), VinVL object labels, image"),)
    image_size = 480
    generation = dict(beam_size=5, max_len_a=0, max_len_b=16, min_len=1, no_repeat_ngram_size=3)
    output = "caption"
    metric_name = "CIDEr-D"

    def prepare(self, ofa, image) -> Example:
        return Example(source(ofa.tokenizer), ofa.image_tensor(image, self))

    def predict(self, ofa, examples, **options):
        hypos = ofa.generate(examples, self.generation, task=self.name, **options)
        out = []
        for best in hypos:
            text = ofa.decode_text(best.tokens)
            if ofa.tokenizer.language == "en":
                text = strip_punctuation(text)
            else:  # Chinese: the punctuation stays, the characters are written together
                text = join_cjk(text)
            out.append({"caption": text.strip(), "score": best.score})
        return out

    def sample(self, b, r):
        if b.train and not b.scst:
            tgt_text = caption_target_text(r.target or "", train=True, max_words=b.max_tgt_length)
        else:
            tgt_text = caption_target_text(r.target or "", train=False)
        return b.sample(r, source(b.tok), b.encode(" " + tgt_text), b.patch_image(r))

    def reference(self, r):
        return caption_target_text(r.target or "", train=False).split("&&")

    def metric(self, predictions, references, layout):
        from openofa.metrics import caption_scores

        return caption_scores(dict(enumerate(predictions)), dict(enumerate(references)))
