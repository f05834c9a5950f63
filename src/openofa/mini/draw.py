"""The small drawing model's scenes: captions to draw from, the data files, and a judge of drawings.

The project's own text-to-image model (``mini-draw``, shipped in ``openofa/weights/mini_draw``)
draws the procedural scenes of :mod:`openofa.mini.scenes` from their descriptions. Its scenes
have one to three objects on one plain light grey background (captions say nothing of
backgrounds; with random background colours a tokenizer trained for 15 minutes spent its codes
on them and lost the objects' colours) and are stored at the model's 64 pixels (an 8x8 grid of
codes: a quarter of the tokens of a 16x16 grid, which is what lets it train on CPU in minutes).

* :func:`drawing_captions`: the ways a scene is described, objects left to right:
  ``"a red circle, a blue square and a green star"``, with sizes (``"a small red circle"``), and
  for two objects ``"a red circle left of a blue square"`` / ``"a blue square right of a red circle"``.
* :func:`write_drawing_dataset`: ``images/*.png`` + ``draw.jsonl`` rows ``{"id", "image", "text"}``
  (one caption per scene, drawn with the scene's seed); ``task: vq`` (:mod:`openofa.mini.vq`)
  turns them into the code files ``task: imagine`` trains on.
* :func:`asked_objects` and :func:`judge`: what a caption asks for, and whether a drawing has it.
  An object is there with the right colour when at least ``min_pixels`` pixels are nearest to its
  colour of the scenes' palette (the background, read from the image's border, competes as one
  more colour); its shape is then checked by the project's own VQA model (``"what shape is the red
  object?"``, or ``"is there a red circle?"`` when two asked objects share a colour), and
  ``left of`` / ``right of`` by the centres of the two colours' pixels.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from openofa.errors import OFAError
from openofa.mini.scenes import COLORS, SHAPES, Scene, image_folder, make_scene

__all__ = ["DRAW_SIZE", "MAX_OBJECTS", "drawing_scene", "drawing_captions", "caption_for", "write_drawing_dataset",
           "asked_objects", "Verdict", "judge", "DRAW_TEXTS"]

DRAW_SIZE = 64  # the model's image side (an 8x8 grid of codes, factor 8)
MAX_OBJECTS = 3
BACKGROUND = (200, 200, 200)  # one plain colour: captions never say it, and the tokenizer spends no codes on it
MIN_PIXELS = 15  # of the 4096 at 64 px; the smallest scene object (a small star) covers about 40

# the relations the captions use (words of the drawing vocabulary)
DRAW_TEXTS = [" a red circle left of a blue square", " a blue square right of a red circle"]


def drawing_scene(seed: int) -> Scene:
    """A drawing scene: 1-3 objects on a plain light grey background, drawn at 256 px (shrunk on writing)."""
    return make_scene(seed, (256, 256), 1, MAX_OBJECTS, backgrounds=("plain",), background_color=BACKGROUND)


def _list(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def drawing_captions(scene: Scene) -> list[str]:
    """Every description of ``scene`` a drawing caption may take (see the module docstring)."""
    objs = sorted(scene.shapes, key=lambda s: s.center[0])
    out = [_list([f"a {o.phrase()}" for o in objs]), _list([f"a {o.phrase(with_size=True)}" for o in objs])]
    if len(objs) == 2:
        a, b = objs
        out += [f"a {a.phrase()} left of a {b.phrase()}", f"a {b.phrase()} right of a {a.phrase()}"]
    return out


def caption_for(scene: Scene) -> str:
    """The one caption a scene is written with, drawn with its seed: for two objects half of
    them say ``left of``/``right of``; otherwise sizes are given one time in four."""
    rng = random.Random(scene.seed * 613 + 11)
    caps = drawing_captions(scene)
    if len(caps) == 4 and rng.random() < 0.5:
        return caps[2 + (rng.random() < 0.5)]
    return caps[1] if rng.random() < 0.25 else caps[0]


def write_drawing_dataset(out_dir: str | Path, n: int, seed: int = 0) -> Path:
    """``n`` drawing scenes (seeds ``seed .. seed+n-1``) as ``images/*.png`` (64 px) and
    ``draw.jsonl``; returns the JSONL's path."""
    from openofa.vision.transforms import resize_bicubic

    out = image_folder("draw", out_dir, n)
    path = out / "draw.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for s in range(seed, seed + n):
            scene = drawing_scene(s)
            name = f"images/draw_{s:07d}.png"
            resize_bicubic(scene.image, DRAW_SIZE, DRAW_SIZE).save(out / name)
            fh.write(json.dumps({"id": s, "image": name, "text": caption_for(scene)}) + "\n")
    return path


# ---- judging drawings ------------------------------------------------------------------------------

_COLOR = "|".join(COLORS)
_SHAPE = "|".join(SHAPES)
_OBJECT = re.compile(rf"\ba (?:(?:small|large) )?({_COLOR}) ({_SHAPE})\b")
_RELATION = re.compile(rf"^a (?:(?:small|large) )?({_COLOR}) ({_SHAPE}) (left|right) of a (?:(?:small|large) )?"
                       rf"({_COLOR}) ({_SHAPE})$")


def asked_objects(caption: str) -> tuple[list[tuple[str, str]], str | None]:
    """The (colour, shape) pairs a drawing caption names, in order, and its relation
    (``"left"``/``"right"``: the first object is left/right of the second) or None."""
    text = caption.strip().lower()
    objs = [(m.group(1), m.group(2)) for m in _OBJECT.finditer(text)]
    rel = _RELATION.match(text)
    return objs, (rel.group(3) if rel else None)


@dataclass
class Verdict:
    asked: list[tuple[str, str]]
    colour: list[bool]  # per asked object: its colour is drawn
    shape: list[bool]  # per asked object: its colour is drawn and the VQA model names its shape
    relation: bool | None  # the relation holds (None: the caption has none, or it cannot be read)


def _palette_map(image):
    """Per pixel, the index of the nearest palette colour (the 8 object colours, then the
    background read from the border) as a (H, W) array, and the palette's names."""
    import numpy as np

    a = np.asarray(image.convert("RGB").resize((DRAW_SIZE, DRAW_SIZE)), dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    names = list(COLORS) + ["background"]
    palette = np.array([COLORS[c] for c in COLORS] + [np.median(border, axis=0)], dtype=np.float32)
    dist = ((a[:, :, None, :] - palette[None, None]) ** 2).sum(-1)
    return dist.argmin(-1), names


def judge(image, caption: str, vqa=None, min_pixels: int = MIN_PIXELS) -> Verdict:
    """Whether a drawing (PIL image) shows what ``caption`` asks for (see the module docstring).
    ``vqa``: the project's VQA model (an :class:`openofa.OFA`); without it shapes are not checked
    (``shape`` copies ``colour``)."""
    import numpy as np

    asked, relation = asked_objects(caption)
    if not asked:
        raise OFAError(f"judge: no object in {caption!r} (expected 'a red circle ...')")
    nearest, names = _palette_map(image)
    colour, centres = [], {}
    for c, _ in asked:
        mask = nearest == names.index(c)
        colour.append(int(mask.sum()) >= min_pixels)
        if colour[-1]:
            centres[c] = float(np.nonzero(mask)[1].mean())
    shape = list(colour)
    if vqa is not None:
        colours = [c for c, _ in asked]
        for i, (c, k) in enumerate(asked):
            if not colour[i]:
                continue
            if colours.count(c) == 1:
                answer = vqa.vqa(image, f"what shape is the {c} object?")
                shape[i] = _answer(answer) == k
            else:
                shape[i] = _answer(vqa.vqa(image, f"is there a {c} {k}?")) == "yes"
    rel = None
    if relation is not None and len(asked) == 2 and asked[0][0] != asked[1][0] and all(colour):
        first, second = centres[asked[0][0]], centres[asked[1][0]]
        rel = first < second if relation == "left" else first > second
    return Verdict(asked, colour, shape, rel)


def _answer(result) -> str:
    if isinstance(result, dict):
        result = result.get("answer", "")
    return str(result).strip().lower()
