"""Text recognition (OFA-OCR): read the text of an image of one line of text.

Prompt "图片上的文字是什么?" (Chinese, the released OCR checkpoints) or " what are the texts on the
image?" (English); the image's long side resized to the patch size and its short side to at least
64 pixels, edge-padded to a square (:func:`openofa.vision.transforms.ocr_transform`: centred for
inference, at a random offset in training as the original does); beam 5, at most 64 tokens, no
n-gram blocking (characters repeat), as the original's ``evaluate_ocr`` scripts. A Chinese answer
has every space removed (the decoder writes its wordpieces apart), an English one keeps one space
between words. Trained on the
normalised text (simplified Chinese, NFKC, lower case, first 30 characters, as the original's
dataset does); scored by exact-match accuracy and 1 - normalised edit distance.

Where the original is broken (its OCR task is not registered with its task list, its evaluation
fails on every batch that has targets, its evaluation script points a Chinese model at the English
vocabulary), this module does what the scripts meant: see ``docs/ocr.md``.
"""

from __future__ import annotations

import random
import re
import unicodedata

from openofa.errors import OFAError
from openofa.tasks.base import IMAGE, Example, Task, layout

PROMPT = " what are the texts on the image?"
PROMPT_ZH = "图片上的文字是什么?"
MAX_TARGET_CHARS = 30
_SPACE = re.compile(r"\s+")


def source(tok) -> list[int]:
    return tok.encode(PROMPT_ZH if tok.language == "zh" else PROMPT, bos=True, eos=True)


def normalize_text(text: str) -> str:
    """The original's OCR target: traditional to simplified Chinese, NFKC, first 30 characters,
    lower case."""
    import zhconv

    return unicodedata.normalize("NFKC", zhconv.convert(text, "zh-hans"))[:MAX_TARGET_CHARS].lower()


def _read(rec, fields, where, targets):
    from openofa.data.records import field_str

    rec.target = field_str(fields, "text", where, required=targets)


class OCR(Task):
    name = "ocr"
    help = "read the text of images of one line of text"
    aliases = ("text_recognition",)
    inputs = (IMAGE,)
    # the original's OCR files (ocr_*_{train,test}.tsv): uniq-id, image base64, text
    layouts = (layout("ocr", ["id", "image", "text"], [0, 1, 2], owner="ocr", targets=["text"], read=_read,
                      patch_image_size=480, max_src_length=80, max_tgt_length=64,
                      doc="uniq-id, image of one line of text, the text"),)
    image_size = 480
    image_mode = "ocr"
    generation = dict(beam_size=5, max_len_a=0, max_len_b=64, min_len=1, no_repeat_ngram_size=0)
    output = "text"
    metric_name = "accuracy"

    def prepare(self, ofa, image) -> Example:
        trained = ofa.trained_tasks() or []
        if ofa.tokenizer.language != "zh" and "ocr" not in trained and not ofa.any_task:
            raise OFAError("ocr: this English model was not trained to read text (OFA's OCR checkpoints are "
                           "Chinese: ofa_cn_ocr_base/large); pass any_task=True (--any-task) to try anyway")
        return Example(source(ofa.tokenizer), ofa.image_tensor(image, self))

    def predict(self, ofa, examples, **options):
        hypos = ofa.generate(examples, self.generation, task=self.name, **options)
        # Chinese: every space goes, as the original's OCR post-processing; English: words keep one
        # space between them (removing it would join them)
        joiner = "" if ofa.tokenizer.language == "zh" else " "
        return [{"text": _SPACE.sub(joiner, ofa.decode_text(h.tokens)).strip(), "score": h.score} for h in hypos]

    def sample(self, b, r):
        from openofa.vision.transforms import ocr_transform

        img = b.load_image(r)
        size = b.patch_image_size
        offset = None
        if b.augment:  # the original's random placement along the short side
            w, h = img.size
            short = min(size, max(64, int(size * min(w, h) / max(w, h))))
            offset = random.randint(0, size - short)
        image = ocr_transform(img, size, offset=offset, mean=b.mean, std=b.std)
        tgt = b.encode(" " + normalize_text(r.target or ""), length=b.max_tgt_length)
        return b.sample(r, source(b.tok), tgt, image)

    def reference(self, r):
        return normalize_text(r.target or "")

    def metric(self, predictions, references, layout):
        from openofa.metrics import ocr_scores

        return ocr_scores(predictions, references)
