"""Default calibration images for the int8 image trunk (``openofa.model.int8_trunk``).

Static int8 fixes each activation's range from calibration images, and inputs outside those
ranges saturate. Without the user's own images, the ranges should cover what photos produce:
these images are deterministic synthetic pictures that span the whole pixel range on purpose —
a smooth gradient through every channel's full range, pure black and white areas, saturated
filled shapes with hard edges, thin lines, and a patch of per-pixel noise (the strongest
high-frequency response a first convolution sees). They are generous rather than typical:
a range wider than needed costs some resolution, a narrower one clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from openofa.errors import OFAError
from openofa.vision.io import IMAGE_SUFFIXES


def calibration_images(n: int = 16, side: int = 384, seed: int = 0) -> list[Image.Image]:
    """``n`` RGB images of ``side`` x ``side`` pixels, a pure function of ``seed``."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / max(side - 1, 1)
    images = []
    for i in range(n):
        phase = rng.uniform(0, 1, size=3)
        grad = np.stack([(xx + phase[0]) % 1.0, (yy + phase[1]) % 1.0, (xx * yy + phase[2]) % 1.0], -1)
        im = Image.fromarray((grad * 255).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(rng.randint(3, 8)):
            x0, y0 = rng.randint(0, side, size=2)
            w, h = rng.randint(side // 10, side // 2, size=2)
            color = tuple(int(c) for c in rng.choice([0, 255], size=3)) if rng.rand() < 0.5 else \
                tuple(int(c) for c in rng.randint(0, 256, size=3))
            box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
            (draw.ellipse if rng.rand() < 0.5 else draw.rectangle)(box, fill=color)
        for _ in range(rng.randint(2, 6)):
            pts = [tuple(int(v) for v in rng.randint(0, side, size=2)) for _ in range(2)]
            draw.line(pts, fill=(0, 0, 0) if rng.rand() < 0.5 else (255, 255, 255), width=int(rng.randint(1, 4)))
        a = np.asarray(im).copy()
        s = side // 4
        x0, y0 = rng.randint(0, side - s, size=2)
        a[y0:y0 + s, x0:x0 + s] = rng.randint(0, 256, size=(s, s, 3))
        if i % 4 == 3:  # some greyscale pictures, as photo collections have
            a = np.repeat(a.mean(-1, keepdims=True), 3, -1).astype(np.uint8)
        images.append(Image.fromarray(a))
    return images


def calibration_files(paths: list[str] | None) -> list[str] | None:
    """The files of a ``--calibration`` option (repeatable), a folder standing for its images
    (sorted); None without the option. A missing path or no image at all is a one-line error."""
    if not paths:
        return None
    files: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(str(p))
        else:
            raise OFAError(f"--calibration: {p}: no such file or folder")
    if not files:
        raise OFAError(f"--calibration: no images in {' '.join(paths)}")
    return files
