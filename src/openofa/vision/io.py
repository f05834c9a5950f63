"""Reading images from the forms OFA data comes in.

The original datasets store images as base64 strings in TSV files and decode them with
``base64.urlsafe_b64decode`` (which also accepts the standard ``+``/``/`` alphabet), then
``Image.open(...).convert("RGB")``. :func:`load_image` accepts that, plus paths, raw bytes
and PIL images, and always returns a fully decoded RGB image. No EXIF rotation is applied,
as in the original.

Unlike the original (which sets ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` and silently
pads a truncated image with grey), a truncated or corrupt image is an error here. This
module never changes PIL's global settings; if other code sets
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``, PIL hides truncation and so does this check.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from pathlib import Path
from typing import Union

from PIL import Image, UnidentifiedImageError

from openofa.errors import OFAError

__all__ = ["load_image", "decode_base64_image", "ImageSource"]

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]

_B64_CHARS = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")
#: the file suffixes read as images where a folder stands for its images
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)
# Leading bytes of the formats an OFA data file realistically holds; used only to tell raw
# image bytes from base64 text in a bytes object.
_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def decode_base64_image(data: str | bytes) -> bytes:
    """Bytes of a base64 image string in the standard or URL-safe alphabet (padding optional,
    whitespace and a ``data:image/...;base64,`` prefix ignored). Raises :class:`OFAError`."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("ascii")
        except UnicodeDecodeError:
            raise OFAError("base64 image data contains non-ASCII bytes") from None
    s = "".join(data.split())
    m = _DATA_URL.match(s)
    if m:
        s = s[m.end():]
    if not s or not _B64_CHARS.fullmatch(s):
        raise OFAError(f"not a base64 image string: {_preview(data)}")
    s = s.rstrip("=").translate(str.maketrans("-_", "+/"))
    if len(s) % 4 == 1:
        raise OFAError(f"base64 image string has an invalid length ({len(s)} characters)")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise OFAError(f"bad base64 image string {_preview(data)}: {e}") from None


def load_image(src: ImageSource, *, name: str | None = None) -> Image.Image:
    """An RGB PIL image from a path, image bytes, a base64 string / bytes, or a PIL image.

    A ``str`` is a path if such a file exists, otherwise it is read as base64 (what the
    original's TSV columns hold); a string that is neither raises "image file not found".
    ``name`` is used in error messages instead of a description of ``src`` (for example
    ``"caption_test.tsv line 12"``). Missing files, data that is not an image and
    truncated/corrupt images raise :class:`OFAError` naming the source.
    """
    if isinstance(src, Image.Image):  # an RGB image is returned as is, others converted
        label = name or "PIL image"
        return _to_rgb(src, label)

    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise OFAError(f"{name or 'image bytes'}: empty data, not an image")
        if not data.startswith(_MAGIC) and _looks_base64(data):
            label = name or f"base64 image ({len(data)} bytes)"
            return _open_bytes(decode_base64_image(data), label)
        return _open_bytes(data, name or f"image bytes ({len(data)} bytes)")

    if isinstance(src, os.PathLike):
        return _open_path(Path(src), name)

    if isinstance(src, str):
        if not src.strip():
            raise OFAError(f"{name or 'image source'}: empty string is not an image path or base64 data")
        path = Path(src) if len(src) < 4096 and "\n" not in src else None
        try:
            is_file = path is not None and path.is_file()
        except OSError:  # e.g. a name too long for the file system
            is_file = False
        if is_file:
            return _open_path(path, name)
        if _looks_base64(src) or _DATA_URL.match(src.strip()):
            label = name or f"base64 image ({len(src)} characters)"
            try:
                return _open_bytes(decode_base64_image(src), label)
            except OFAError:
                # A short string with a '/' that is not an image either was meant as a path.
                if len(src) < 256 and "/" in src and not src.startswith("/9j/"):
                    raise OFAError(f"image file not found: {name or src}") from None
                raise
        if path is not None and path.exists():
            raise OFAError(f"image path is not a file: {src}")
        raise OFAError(f"image file not found: {name or src}")

    raise OFAError(
        f"cannot load an image from a {type(src).__name__}; expected a path, bytes, a base64 string or a PIL image"
    )


def _looks_base64(data: str | bytes) -> bool:
    # Long enough, only base64 characters (plus whitespace and padding): a path like
    # "cat.jpg" or "images/a.png" contains '.', so it never qualifies.
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            return False
    s = "".join(data.split())
    return len(s) >= 16 and bool(_B64_CHARS.fullmatch(s))


def _open_path(path: Path, name: str | None) -> Image.Image:
    label = name or str(path)
    if not path.exists():
        raise OFAError(f"image file not found: {label}")
    if not path.is_file():
        raise OFAError(f"image path is not a file: {label}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OFAError(f"cannot read image file {label}: {e.strerror or e}") from None
    if not data:
        raise OFAError(f"image file is empty: {label}")
    return _open_bytes(data, label)


def _open_bytes(data: bytes, label: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise OFAError(f"not an image (unrecognised format): {label}") from None
    except Image.DecompressionBombError as e:
        raise OFAError(f"image too large: {label}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise OFAError(f"cannot open image {label}: {e}") from None
    return _to_rgb(img, label)


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    try:
        img.load()  # Image.open is lazy: force decoding so truncation is caught here
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            img = _to_8bit(img)
        return img if img.mode == "RGB" else img.convert("RGB")
    except Image.DecompressionBombError as e:
        raise OFAError(f"image too large: {label}: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            raise OFAError(f"image is truncated or corrupt: {label} ({msg})") from None
        raise OFAError(f"cannot decode image {label}: {msg}") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float greyscale image scaled to 8 bits (PIL's own conversion
    clips every value above 255, turning a 16-bit image white): 16-bit and integer images by
    65535 (their values' range up to 65535, else their maximum), float images by 1 when their
    values lie in [0, 1], else by their maximum."""
    import numpy as np

    a = np.asarray(img, dtype=np.float64)
    top = float(a.max()) if a.size else 0.0
    if img.mode == "F":
        scale = 1.0 if top <= 1.0 else top
    else:
        scale = 65535.0 if top <= 65535 else top
    a = np.clip(a / (scale or 1.0) * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(a, mode="L")


def _preview(s: str | bytes) -> str:
    text = s if isinstance(s, str) else repr(s)
    return repr(text[:40] + "...") if len(text) > 40 else repr(text)
