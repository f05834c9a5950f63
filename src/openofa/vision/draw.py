"""Drawing a predicted box onto its image (``ofa ground --draw``, ``ofa demo``)."""

from __future__ import annotations

from pathlib import Path

from openofa.vision.io import load_image


def draw_box(image_path: str, box: list[float] | None, out_path: Path, label: str = "") -> None:
    """Write ``image_path`` with ``box`` (x0, y0, x1, y1 in its pixels; None: no box) outlined in
    red and ``label`` at its top-left corner to ``out_path`` (folders are created)."""
    from PIL import ImageDraw

    img = load_image(image_path).copy()
    if box is not None:
        draw = ImageDraw.Draw(img)
        width = max(2, round(min(img.size) / 100))
        draw.rectangle(box, outline=(255, 0, 0), width=width)
        if label:
            draw.text((box[0] + width, box[1] + width), label, fill=(255, 0, 0))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
