"""The small reading model's scenes: words and numbers drawn on the scenes' backgrounds, the data
files, and the texts it is judged on.

The project's own text-recognition model (``mini-read``, shipped in ``openofa/weights/mini_read``)
reads one short line of text: a word of the scenes (``"circle"``, ``"Purple"``), a made-up word of
two to six letters (``"kelto"``, ``"QUIB"``), or a number of one to five digits (``"4071"``), drawn in the
scenes' dark colours on one of their light backgrounds (plain, gradient, stripes, noise) in
Pillow's own scalable font (Aileron, bundled with Pillow since 10.1, so nothing is installed),
at 18 to 34 pixels, slightly shifted. Made-up words and numbers are drawn at random, so most
held-out made-up words and longer numbers are strings the model never saw: it reads letters, not
whole words.

The model is an OFA of the ``mini-read`` size: the Chinese OCR checkpoints' layout (the BERT
vocabulary, ``bpe=bert``, the prompt ``图片上的文字是什么?``, spaces removed from the answer) with a
subset of 83 wordpieces: ``a``-``z``, ``0``-``9``, their ``##`` continuations and the prompt's
characters (:func:`openofa.mini.vocab.reading_symbols`), so every lower-case word or number
splits into single characters (``kelto`` -> ``k ##e ##l ##t ##o``).

* :func:`reading_text` / :func:`render_text` / :func:`reading_scene`: the text and images of a seed.
* :func:`write_reading_dataset`: the data files of ``recipes/scenes_mini_read.yaml``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from openofa.errors import OFAError
from openofa.mini.scenes import COLORS, NUMBER_WORDS, SHAPES, image_folder

__all__ = ["READ_SIZE", "KINDS", "SCENE_WORDS", "reading_text", "render_text", "Reading", "reading_scene",
           "write_reading_dataset"]

READ_SIZE = 128  # the model's image side: an 8x8 grid of patches, the text on the middle rows
KINDS = ("word", "madeup", "number")
#: the scenes' own words (at most eight letters), the first kind of text
SCENE_WORDS = tuple(sorted({*SHAPES, *COLORS, *NUMBER_WORDS, "small", "large", "left", "right", "yes", "no"}))
_INK = ("red", "green", "blue", "purple", "black")  # the palette's colours that stand out on light backgrounds
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_FONT_SIZES = (18, 34)


def reading_text(seed: int) -> tuple[str, str]:
    """The text of seed ``seed`` as drawn and its kind (:data:`KINDS`): a scene word, a made-up
    word of 2-6 letters, or a number of 1-5 digits, in equal parts; words are in lower case
    (60%), capitalised (20%) or upper case (20%). The model answers in lower case (the OCR task's
    target normalisation, as the original's)."""
    rng = random.Random(seed * 7919 + 5)
    kind = KINDS[rng.randrange(3)]
    if kind == "number":
        digits = rng.randint(1, 5)
        return str(rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)), kind
    if kind == "word":
        word = rng.choice(SCENE_WORDS)
    else:
        word = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(2, 6)))
    case = rng.random()
    return (word if case < 0.6 else word.capitalize() if case < 0.8 else word.upper()), kind


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: its fixed bitmap font
        raise OFAError("reading scenes need Pillow with FreeType (its bundled scalable font)") from None


def render_text(text: str, seed: int):
    """``text`` drawn as a text-line image: a light scene background, a dark palette colour, a
    font size of 18-34 px, margins of a few pixels, the line at least three times as wide as high
    (so that letters come out at one size in the model's input), the text placed at random along
    it. Returns the image (PIL, RGB) and each character's box ``(x1, y1, x2, y2)`` in it."""
    from PIL import ImageDraw

    from openofa.mini.scenes import _background

    rng = random.Random(seed * 104729 + 3)
    font = _font(rng.randint(*_FONT_SIZES))
    x0, y0, x1, y1 = font.getbbox(text)
    tw, th = x1 - x0, y1 - y0
    size = font.size
    h = size + rng.randint(size // 4, size // 2)
    w = max(tw + rng.randint(size // 4, size), 3 * h)
    img, _ = _background(rng, (w, h))
    ink = COLORS[rng.choice(_INK)]
    x = rng.randint(0, max(0, w - tw)) - x0
    y = (h - th) // 2 - y0 + rng.randint(-max(1, (h - th) // 4), max(1, (h - th) // 4))
    draw = ImageDraw.Draw(img)
    draw.text((x, y), text, fill=ink, font=font)
    boxes = [draw.textbbox((x + font.getlength(text[:i]), y), c, font=font) for i, c in enumerate(text)]
    return img, [tuple(float(v) for v in b) for b in boxes]


@dataclass
class Reading:
    """One reading scene: the text line, its text and kind, and the model's input square."""

    seed: int
    line: Image.Image  # the rendered text line
    text: str  # as drawn
    kind: str
    square: Image.Image  # the line as the OCR task gives it to the model (centred, READ_SIZE)
    boxes: list[tuple[float, float, float, float]]  # each character's box in the square

    @property
    def answer(self) -> str:
        """What the model should read: the text as the OCR task normalises targets (lower case)."""
        from openofa.tasks.ocr import normalize_text

        return normalize_text(self.text)


def reading_scene(seed: int, size: int = READ_SIZE) -> Reading:
    """The text, line image and model input of seed ``seed``."""
    from openofa.vision.transforms import ocr_layout, ocr_square

    text, kind = reading_text(seed)
    line, boxes = render_text(text, seed)
    nw, nh, ox, oy = ocr_layout(*line.size, size)
    sx, sy = nw / line.width, nh / line.height
    square = [(ox + x1 * sx, oy + y1 * sy, ox + x2 * sx, oy + y2 * sy) for x1, y1, x2, y2 in boxes]
    return Reading(seed, line, text, kind, ocr_square(line, size), square)


def write_reading_dataset(out_dir: str | Path, n: int, seed: int = 0) -> Path:
    """``n`` reading scenes (seeds ``seed .. seed+n-1``): their model inputs as ``images/*.png``
    (the text lines as the OCR task centres them in a ``READ_SIZE`` square, so that every stage
    of the recipe sees the same pixels), ``ocr.jsonl`` (``id``, ``image``, ``text``, ``kind``:
    the OCR task's JSONL layout) and ``detection.jsonl`` (every character's box and the
    character, in lower case, as its name, for the trunk stage, :mod:`openofa.mini.trunk`); returns the OCR
    file's path."""
    out = image_folder("read", out_dir, n)
    path = out / "ocr.jsonl"
    with path.open("w", encoding="utf-8") as fh, (out / "detection.jsonl").open("w", encoding="utf-8") as det:
        for s in range(seed, seed + n):
            r = reading_scene(s)
            name = f"images/read_{s:07d}.png"
            r.square.save(out / name)
            fh.write(json.dumps({"id": s, "image": name, "text": r.text, "kind": r.kind}) + "\n")
            objects = [[round(v, 1) for v in b] + [k, c] for k, (b, c) in enumerate(zip(r.boxes, r.answer))]
            det.write(json.dumps({"id": s, "image": name, "objects": objects}) + "\n")
    return path
