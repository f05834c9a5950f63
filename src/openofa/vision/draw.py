"""Drawing boxes on an image (``ofa ground|detect --draw``, ``ofa demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

#: outline colours, one per box in turn
COLORS = ((255, 0, 0), (0, 160, 255), (0, 200, 0), (255, 160, 0), (200, 0, 255), (0, 200, 200))


def draw_boxes(image, boxes: Sequence[tuple[Sequence[float], str]], out_path: str | Path, label: str = "") -> Path:
    """Write ``image`` (anything :func:`openofa.vision.io.load_image` reads) with each
    ``(box, label)`` drawn to ``out_path``; a box's empty label is replaced by ``label``. Boxes
    are ``[x1, y1, x2, y2]`` in the image's pixels; their corners are ordered before drawing."""
    from PIL import ImageDraw

    from openofa.vision.io import load_image

    img = load_image(image).copy()
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 100))
    for i, (box, text) in enumerate(boxes):
        x1, x2 = sorted((float(box[0]), float(box[2])))
        y1, y2 = sorted((float(box[1]), float(box[3])))
        color = COLORS[i % len(COLORS)]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        if text or label:
            draw.text((x1 + width, y1 + width), text or label, fill=color)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
    return out_path


def draw_box(image, box: Sequence[float] | None, out_path: str | Path, label: str = "") -> Path:
    """One box (or none) drawn on ``image``; see :func:`draw_boxes`."""
    return draw_boxes(image, [] if box is None else [(box, label)], out_path)
