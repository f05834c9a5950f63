"""Images of every bit depth become the RGB the model expects, their levels scaled, not clipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from openofa.vision.io import load_image


@pytest.mark.parametrize("mode, top", [("I;16", 65535), ("I", 65535), ("F", 1.0)])
def test_deep_greyscale_is_scaled_to_eight_bits(tmp_path, mode, top):
    ramp = np.linspace(0, top, 64 * 64).reshape(64, 64)
    if mode == "F":
        img = Image.fromarray(ramp.astype(np.float32), mode="F")
    else:
        img = Image.fromarray(ramp.astype(np.uint16 if mode == "I;16" else np.int32))
        if mode == "I;16":
            path = tmp_path / "deep.png"
            img.save(path)  # a 16-bit greyscale PNG, as cameras and scanners write them
            img = path
    out = np.asarray(load_image(img))
    assert out.shape == (64, 64, 3) and out.min() == 0 and out.max() == 255
    assert 120 < out.mean() < 135  # a ramp, not an all-white image
