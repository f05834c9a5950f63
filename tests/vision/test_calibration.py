"""The int8 trunk's default calibration images (openofa/vision/calibration.py)."""

from __future__ import annotations

import numpy as np

from openofa.vision.calibration import calibration_images


def test_calibration_images_are_deterministic_and_span_the_pixel_range():
    a, b = calibration_images(8, 96, seed=3), calibration_images(8, 96, seed=3)
    assert len(a) == 8 and all(im.size == (96, 96) and im.mode == "RGB" for im in a)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(calibration_images(1, 96, seed=4)[0]))
    pixels = np.stack([np.asarray(im) for im in a])
    for c in range(3):  # every channel reaches both ends of its range
        assert pixels[..., c].min() == 0 and pixels[..., c].max() == 255
    grey = [im for im in a if np.ptp(np.asarray(im).astype(int), axis=-1).max() == 0]
    assert len(grey) == 2  # every fourth picture is greyscale


def test_calibration_files_expand_folders_and_name_what_is_missing(tmp_path):
    import pytest

    from openofa.errors import OFAError
    from openofa.vision.calibration import calibration_files

    (tmp_path / "imgs").mkdir()
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    (tmp_path / "one.png").write_bytes(b"x")
    assert calibration_files(None) is None and calibration_files([]) is None
    assert calibration_files([str(tmp_path / "imgs"), str(tmp_path / "one.png")]) == [
        str(tmp_path / "imgs" / "a.JPG"), str(tmp_path / "imgs" / "b.png"), str(tmp_path / "one.png")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(OFAError, match="no images in"):
        calibration_files([str(tmp_path / "empty")])
    with pytest.raises(OFAError, match="gone: no such file or folder"):
        calibration_files([str(tmp_path / "gone")])
