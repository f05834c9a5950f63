"""Images of a request: an upload's bytes, base64 text, a ``data:`` URL, or (only when the
service allows it) an ``http(s)://`` URL fetched with a timeout.

A request never names a file of this machine: a string is base64, a data URL or a URL, and is
never tried as a path (:func:`openofa.vision.io.load_image` would open a path; it is given the
decoded image only). The size is read from the image header and checked against the pixel limit
before the pixels are decoded, so a small file claiming a huge image costs nothing.
"""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import warnings

from PIL import Image, UnidentifiedImageError

from openofa.errors import OFAError
from openofa.serve.settings import ServeSettings
from openofa.vision.io import decode_base64_image, load_image


class TooLarge(OFAError):
    """A fetched image's body is larger than the service's body limit (HTTP 413; an image with too
    many pixels is a plain :class:`OFAError`, 422, like any other image the service refuses)."""


def image_from_bytes(data: bytes, settings: ServeSettings, label: str = "image") -> Image.Image:
    """A decoded RGB image from the bytes of an image file; one-line :class:`OFAError` for empty
    data, data that is not an image, a truncated image or one over the pixel limit."""
    if not data:
        raise OFAError(f"{label}: empty data, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise OFAError(f"{label}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise OFAError(f"{label}: image has more pixels than this service accepts "
                       f"({settings.max_pixels})") from None
    except (OSError, SyntaxError, ValueError) as e:
        what = "image is truncated or corrupt" if "truncat" in str(e).lower() else "cannot open image"
        raise OFAError(f"{label}: {what} ({e})") from None
    w, h = img.size
    if w * h > settings.max_pixels:
        raise OFAError(f"{label}: image is {w}x{h} = {w * h} pixels, more than this service accepts "
                       f"({settings.max_pixels})")
    if w < 1 or h < 1:
        raise OFAError(f"{label}: image has no pixels ({w}x{h})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked above
        return load_image(img, name=label)


def image_from_text(text: str, settings: ServeSettings, label: str = "image") -> Image.Image:
    """A decoded image from a request's string: a ``data:`` URL, base64 text, or an
    ``http(s)://`` URL when ``settings.allow_urls``."""
    if not isinstance(text, str):
        raise OFAError(f"{label}: expected base64 text, a data: URL or an image URL, got {type(text).__name__}")
    s = text.strip()
    head = s[:16].lower()
    if head.startswith(("http://", "https://")):
        if not settings.allow_urls:
            raise OFAError(f"{label}: image URLs are not fetched by this service (start it with "
                           "--allow-urls); send the image itself")
        return image_from_bytes(fetch(s, settings, label), settings, label)
    if "://" in head or head.startswith("file:"):
        raise OFAError(f"{label}: only http(s) image URLs can be fetched, and only when the service allows it")
    if head.startswith("data:") and not head.startswith("data:image/"):
        raise OFAError(f"{label}: a data: URL must hold an image (data:image/...;base64,...)")
    try:
        return image_from_bytes(decode_base64_image(s), settings, label)
    except OFAError as e:
        if len(s) < 512 and not head.startswith("data:"):  # short text: likely meant as a path or a name
            raise OFAError(f"{label}: not base64 image data or a data: URL (a request cannot name a file "
                           "on the server)") from None
        raise e


def fetch(url: str, settings: ServeSettings, label: str = "image") -> bytes:
    """The body of ``url`` (at most the body limit), within the fetch timeout."""
    request = urllib.request.Request(url, headers={"User-Agent": "openofa-serve"})
    try:
        with urllib.request.urlopen(request, timeout=settings.fetch_timeout) as response:
            data = response.read(settings.max_body_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise OFAError(f"{label}: cannot fetch {url[:200]}: {reason}") from None
    if len(data) > settings.max_body_bytes:
        raise TooLarge(f"{label}: the image at {url[:200]} is larger than {settings.max_body_bytes} bytes")
    return data
