"""Procedural scenes: images of coloured shapes with captions, questions and referring expressions.

Deterministic from a seed (``random.Random(seed)`` only, no global state). Used to train and test
the project's own small model: every caption, answer and box follows from the drawn scene, so a
model can learn them exactly.

    scene = make_scene(seed=7)
    scene.image, scene.caption(), scene.questions(), scene.referring_expressions()
    write_dataset("data/scenes", n=1000, seed=0)   # images/ + caption/vqa/ground JSONL
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLORS = {
    "red": (210, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 210),
    "yellow": (235, 205, 40),
    "purple": (140, 60, 170),
    "orange": (240, 130, 30),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass
class Shape:
    kind: str
    color: str
    size: str  # "small" | "large"
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def phrase(self, with_size: bool = False) -> str:
        return f"{self.size} {self.color} {self.kind}" if with_size else f"{self.color} {self.kind}"


@dataclass
class Scene:
    image: Image.Image
    shapes: list[Shape]
    seed: int
    background: str = "plain"
    meta: dict = field(default_factory=dict)

    # ---- text about the scene --------------------------------------------------------------
    def caption(self) -> str:
        """Objects left to right, e.g. 'a small red circle, a large blue square and a green star'."""
        parts = [f"a {s.phrase(with_size=True)}" for s in sorted(self.shapes, key=lambda s: s.center[0])]
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def _unique(self, pred) -> list[Shape]:
        return [s for s in self.shapes if pred(s)]

    def questions(self) -> list[tuple[str, str]]:
        """(question, answer) pairs whose answer is fully determined by the scene."""
        return [(q, a) for q, a, _ in self.questions_with_subjects()]

    def questions_with_subjects(self) -> list[tuple[str, str, Shape | None]]:
        """:meth:`questions` with the one object each is about (None for counts, absent things)."""
        qa: list[tuple[str, str, Shape | None]] = []
        w, h = self.image.size
        for kind in sorted({s.kind for s in self.shapes}):
            same = self._unique(lambda s: s.kind == kind)
            if len(same) == 1:
                qa.append((f"what color is the {kind}?", same[0].color, same[0]))
                qa.append((f"is the {kind} on the left or on the right?", _side(same[0], w), same[0]))
            n = len(same)
            qa.append((f"how many {plural(kind)} are there?", NUMBER_WORDS[n], None))
        for color in sorted({s.color for s in self.shapes}):
            same = self._unique(lambda s: s.color == color)
            if len(same) == 1:
                qa.append((f"what shape is the {color} object?", same[0].kind, same[0]))
        qa.append(("how many objects are there?", NUMBER_WORDS[len(self.shapes)], None))

        def is_there(color: str, kind: str) -> tuple[str, str, Shape | None]:
            found = self._unique(lambda o: o.color == color and o.kind == kind)
            return f"is there a {color} {kind}?", "yes" if found else "no", found[0] if len(found) == 1 else None

        rng = random.Random(self.seed * 7919 + 1)
        for _ in range(2):
            qa.append(is_there(rng.choice(sorted(COLORS)), rng.choice(SHAPES)))
        s = rng.choice(self.shapes)
        qa.append(is_there(s.color, s.kind))
        return qa

    def size_questions(self) -> list[tuple[str, str, Shape]]:
        """Questions about an object's size ("is the circle small or large?"), which the shipped
        model was never trained on: the example task the LoRA recipe teaches it
        (recipes/scenes_mini_lora.yaml). Words of the scenes' vocabulary only."""
        qa = []
        for s in sorted(self.shapes, key=lambda o: o.center[0]):
            if len(self._unique(lambda o: o.kind == s.kind)) == 1:
                qa.append((f"is the {s.kind} small or large?", s.size, s))
            elif len(self._unique(lambda o: o.kind == s.kind and o.color == s.color)) == 1:
                qa.append((f"is the {s.color} {s.kind} small or large?", s.size, s))
        return qa

    def referring_expressions(self) -> list[tuple[str, tuple[float, float, float, float]]]:
        """(expression, box) pairs naming exactly one object."""
        out = []
        w, _ = self.image.size
        for s in self.shapes:
            if len(self._unique(lambda o: o.color == s.color and o.kind == s.kind)) == 1:
                out.append((f"the {s.color} {s.kind}", s.box))
            if len(self._unique(lambda o: o.kind == s.kind)) == 2:
                others = [o for o in self.shapes if o.kind == s.kind and o is not s]
                side = "left" if s.center[0] < others[0].center[0] else "right"
                out.append((f"the {s.kind} on the {side}", s.box))
            if len(self._unique(lambda o: o.kind == s.kind and o.size == s.size)) == 1 and \
                    len(self._unique(lambda o: o.kind == s.kind)) > 1:
                out.append((f"the {s.size} {s.kind}", s.box))
        return out


def _scaled(box, sx: float, sy: float) -> list[float]:
    return [round(v * f, 2) for v, f in zip(box, (sx, sy, sx, sy))]


def plural(kind: str) -> str:
    return kind + "es" if kind.endswith("s") else kind + "s"


def _side(s: Shape, width: int) -> str:
    return "left" if s.center[0] < width / 2 else "right"


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[float, float, float, float], fill) -> None:
    x1, y1, x2, y2 = box
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill)
    elif kind == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    elif kind == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=fill)
    elif kind == "cross":
        t = r * 0.35
        draw.rectangle((cx - t, y1, cx + t, y2), fill=fill)
        draw.rectangle((x1, cy - t, x2, cy + t), fill=fill)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(kind)


BACKGROUNDS = ("plain", "gradient", "stripes", "noise")


def _background(rng: random.Random, size: tuple[int, int], kinds: tuple[str, ...] = BACKGROUNDS,
                color: tuple[int, int, int] | None = None) -> tuple[Image.Image, str]:
    w, h = size
    kind = rng.choice(kinds)
    base = tuple(rng.randint(150, 235) for _ in range(3))
    base = base if color is None else tuple(color)  # drawn all the same: the later draws do not move
    img = Image.new("RGB", size, base)
    draw = ImageDraw.Draw(img)
    if kind == "gradient":
        other = tuple(rng.randint(120, 235) for _ in range(3))
        for y in range(h):
            t = y / max(1, h - 1)
            draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(base, other)))
    elif kind == "stripes":
        other = tuple(max(0, c - rng.randint(15, 35)) for c in base)
        step = rng.randint(8, 20)
        for x in range(0, w, 2 * step):
            draw.rectangle((x, 0, x + step - 1, h), fill=other)
    elif kind == "noise":  # 4x4-pixel blocks of random brightness around the base colour
        cols, rows = (w + 3) // 4, (h + 3) // 4
        blocks = Image.new("RGB", (cols, rows))
        blocks.putdata([tuple(min(255, max(0, v + d)) for v in base)
                        for d in (rng.randint(-18, 18) for _ in range(cols * rows))])
        img = blocks.resize((cols * 4, rows * 4), Image.Resampling.NEAREST).crop((0, 0, w, h))
    return img, kind


def _overlap(a, b) -> float:
    """Fraction of the smaller box covered by the intersection."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small if small else 0.0


def make_scene(seed: int, size: tuple[int, int] = (256, 256), min_objects: int = 1, max_objects: int = 4,
               backgrounds: tuple[str, ...] = BACKGROUNDS, background_color: tuple[int, int, int] | None = None) -> Scene:
    """One scene, a pure function of ``seed``. Objects may overlap a little (at most 25% of the
    smaller one), never hide each other. ``backgrounds``: the kinds of background drawn from;
    ``background_color``: the background's base colour instead of a random one."""
    rng = random.Random(seed)
    img, bg = _background(rng, size, tuple(backgrounds), background_color)
    draw = ImageDraw.Draw(img)
    w, h = size
    shapes: list[Shape] = []
    for _ in range(rng.randint(min_objects, max_objects)):
        for _attempt in range(50):
            size_name = rng.choice(("small", "large"))
            side = rng.uniform(0.18, 0.24) * w if size_name == "small" else rng.uniform(0.3, 0.38) * w
            x1, y1 = rng.uniform(2, w - side - 2), rng.uniform(2, h - side - 2)
            box = (round(x1, 1), round(y1, 1), round(x1 + side, 1), round(y1 + side, 1))
            if all(_overlap(box, s.box) <= 0.25 for s in shapes):
                break
        else:
            break
        kind, color = rng.choice(SHAPES), rng.choice(sorted(COLORS))
        shapes.append(Shape(kind, color, size_name, box))
    # draw large shapes first so small ones stay visible
    for s in sorted(shapes, key=lambda s: s.size != "large"):
        _draw_shape(draw, s.kind, s.box, COLORS[s.color])
    return Scene(img, shapes, seed, bg)


def image_folder(what: str, out_dir: str | Path, n: int | None = None) -> Path:
    """``out_dir`` with its ``images/`` folder made, for a data writer named ``what``; ``n`` (when
    given) is checked to be a count of at least one. Both problems are one-line errors."""
    from openofa.errors import OFAError

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise OFAError(f"{what}: n must be an integer >= 1, got {n!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OFAError(f"{what}: {out} is a file, not a folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    return out


def write_dataset(out_dir: str | Path, n: int, seed: int = 0, size: tuple[int, int] = (256, 256),
                  questions: int | None = None, image_size: int | None = None,
                  size_questions: bool = False) -> dict[str, Path]:
    """Write ``n`` scenes (seeds ``seed .. seed+n-1``) as ``images/*.png`` plus one JSONL per task:
    ``caption.jsonl`` {image, caption}, ``vqa.jsonl`` {image, question, answers, and box: the
    object the question is about, when it is about one},
    ``ground.jsonl`` {image, text, box}, ``detection.jsonl`` {image, objects: [[x1, y1, x2, y2,
    id, "size colour shape"], ...]} (the pretraining detection layout; the image trunk is
    pretrained on it). Image paths are relative to ``out_dir``.

    ``questions``: at most this many questions per scene, drawn with the scene's seed (training
    sets use it to keep the task mixture balanced and see more images); None writes them all.

    ``image_size``: store square images of this side instead of ``size`` (scenes are still drawn
    at ``size``, then shrunk with the bicubic filter of the tasks' resize, boxes scaled with
    them). A model that reads images at that side then sees exactly the pixels it would get from
    the full-size file, while the data loader skips decoding and resizing the larger image.

    ``size_questions``: also ``vqa_size.jsonl``, the questions of :meth:`Scene.size_questions`
    (every one of each scene)."""
    from openofa.errors import OFAError
    from openofa.vision.transforms import resize_bicubic

    for name, value, low in (("n", n, 1), ("questions", questions, 0), ("image_size", image_size, 16)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise OFAError(f"scenes: {name} must be an integer >= {low}, got {value!r}")
    out = image_folder("scenes", out_dir)
    files = {t: out / f"{t}.jsonl" for t in ("caption", "vqa", "ground", "detection")}
    if size_questions:
        files["vqa_size"] = out / "vqa_size.jsonl"
    handles = {t: p.open("w", encoding="utf-8") for t, p in files.items()}
    try:
        for s in range(seed, seed + n):
            scene = make_scene(s, size)
            name = f"images/scene_{s:07d}.png"
            w, h = scene.image.size
            ow, oh = (image_size, image_size) if image_size else (w, h)
            sx, sy = ow / w, oh / h
            resize_bicubic(scene.image, ow, oh).save(out / name)
            handles["caption"].write(json.dumps({"id": s, "image": name, "caption": scene.caption()}) + "\n")
            qa = list(enumerate(scene.questions_with_subjects()))
            if questions is not None and len(qa) > questions:
                qa = sorted(random.Random(s * 31 + 5).sample(qa, questions), key=lambda x: x[0])
            for i, (q, a, subject) in qa:
                rec = {"id": f"{s}-{i}", "image": name, "question": q, "answers": {a: 1.0}}
                if subject is not None:  # the object the question is about (box_attention_weight uses it)
                    rec["box"] = _scaled(subject.box, sx, sy)
                handles["vqa"].write(json.dumps(rec) + "\n")
            for i, (text, box) in enumerate(scene.referring_expressions()):
                rec = {"id": f"{s}-{i}", "image": name, "text": text, "box": _scaled(box, sx, sy)}
                handles["ground"].write(json.dumps(rec) + "\n")
            if size_questions:
                for i, (q, a, subject) in enumerate(scene.size_questions()):
                    rec = {"id": f"{s}-s{i}", "image": name, "question": q, "answers": {a: 1.0},
                           "box": _scaled(subject.box, sx, sy)}
                    handles["vqa_size"].write(json.dumps(rec) + "\n")
            objects = [[*_scaled(o.box, sx, sy), SHAPES.index(o.kind), o.phrase(with_size=True)] for o in scene.shapes]
            handles["detection"].write(json.dumps({"id": s, "image": name, "objects": objects}) + "\n")
    finally:
        for fh in handles.values():
            fh.close()
    return files
