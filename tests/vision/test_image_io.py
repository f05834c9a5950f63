"""load_image: every accepted source form and every error case."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openofa.errors import OFAError
from openofa.vision import decode_base64_image, load_image

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
PNG = GOLDEN / "images" / "b_640x480_rgb.png"
GRAY = GOLDEN / "images" / "c_320x240_gray.png"


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return _pixels(Image.open(PNG).convert("RGB"))


def test_path_str_and_pathlike(reference):
    for src in (PNG, str(PNG)):
        img = load_image(src)
        assert img.mode == "RGB" and img.size == (640, 480)
        assert np.array_equal(_pixels(img), reference)


def test_bytes(reference):
    data = PNG.read_bytes()
    assert np.array_equal(_pixels(load_image(data)), reference)
    assert np.array_equal(_pixels(load_image(bytearray(data))), reference)


def test_base64_standard_and_urlsafe(reference):
    data = PNG.read_bytes()
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    assert std != url  # the file's encoding really uses '+' or '/'
    for s in (std, url, url.rstrip("="), "data:image/png;base64," + std, std.encode()):
        assert np.array_equal(_pixels(load_image(s)), reference)


def test_base64_jpeg_looks_like_a_path():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buf, format="JPEG")
    s = base64.b64encode(buf.getvalue()).decode()
    assert s.startswith("/9j/")
    img = load_image(s)
    assert img.size == (4, 4) and img.mode == "RGB"


def test_pil_image_converted():
    gray = Image.open(GRAY)
    img = load_image(gray)
    assert img.mode == "RGB" and img.size == (320, 240)
    rgba = Image.new("RGBA", (3, 3), (1, 2, 3, 0))
    assert load_image(rgba).mode == "RGB"
    rgb = Image.new("RGB", (3, 3))
    assert load_image(rgb) is rgb


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(OFAError, match=r"image file not found: .*nope\.png"):
        load_image(missing)
    with pytest.raises(OFAError, match=r"image file not found: .*nope\.png"):
        load_image(str(missing))
    with pytest.raises(OFAError, match="image file not found: images/abcdefghijklmnopqrst"):
        load_image("images/abcdefghijklmnopqrst")


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(OFAError, match="not a file"):
        load_image(tmp_path)


def test_not_an_image(tmp_path):
    f = tmp_path / "notes.png"
    f.write_text("hello, this is text")
    with pytest.raises(OFAError, match=r"not an image.*notes\.png"):
        load_image(f)
    with pytest.raises(OFAError, match="not an image"):
        load_image(b"\x00\x01\x02 definitely not an image")
    with pytest.raises(OFAError, match="not an image"):
        load_image(base64.b64encode(b"just some text, not an image at all").decode())


def test_empty_inputs(tmp_path):
    f = tmp_path / "empty.jpg"
    f.write_bytes(b"")
    with pytest.raises(OFAError, match=r"empty: .*empty\.jpg"):
        load_image(f)
    with pytest.raises(OFAError, match="empty"):
        load_image(b"")
    with pytest.raises(OFAError, match="empty string"):
        load_image("   ")


def test_truncated_image(tmp_path):
    data = PNG.read_bytes()
    f = tmp_path / "cut.png"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(OFAError, match=r"truncated or corrupt: .*cut\.png"):
        load_image(f)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="JPEG")
    j = tmp_path / "cut.jpg"
    j.write_bytes(buf.getvalue()[:200])
    with pytest.raises(OFAError, match=r"cut\.jpg"):
        load_image(j)


def test_name_used_in_messages():
    with pytest.raises(OFAError, match="caption_test.tsv line 7"):
        load_image(b"garbage bytes here", name="caption_test.tsv line 7")


def test_bad_base64():
    with pytest.raises(OFAError, match="length"):
        decode_base64_image("abcde")
    with pytest.raises(OFAError, match="not a base64"):
        decode_base64_image("abc$def")


def test_unsupported_type():
    with pytest.raises(OFAError, match="int"):
        load_image(42)  # type: ignore[arg-type]
