"""Image preprocessing of the original datasets, with PIL + torch (no torchvision).

* :func:`patch_resize_transform` — captioning, VQA, visual entailment and OCR:
  RGB -> PIL bicubic resize to ``(S, S)`` (aspect ratio not kept) -> ``/255`` ->
  ``(x - 0.5) / 0.5``. torchvision's ``Resize`` on a PIL image is a plain
  ``Image.resize(..., BICUBIC)`` call and ``ToTensor``/``Normalize`` are the float32 ops
  below, so the output is bit-identical with the same Pillow version.
* :func:`refcoco_transform` — visual grounding: ``RandomResize([512], max_size=512)`` of
  ``utils/transforms.py`` sets the short side to 512, the long side to
  ``int(512 * long / short)``, then clamps both to 512; so every image becomes exactly
  512x512 (aspect ratio *not* kept). Boxes are scaled by the resize ratios in float32 and the
  ratios are returned (float32 values, like the original's ``resize_w / w`` tensors) so that
  predicted boxes can be mapped back.
* :func:`collate_images` stacks a batch into ``patch_images`` / ``patch_masks``.

* :class:`ImagePreprocess` — one model's image settings (side, mean/std, resize mode), read from
  the checkpoint's task settings and applied by every task, the CLI, ``ofa eval`` and validation.

The official fine-tuning configs use mean = std = 0.5; the ImageNet-1K checkpoint was trained and
is evaluated with ``imagenet_default_mean_and_std`` (the ImageNet statistics).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from openofa.errors import OFAError
from openofa.vision.io import ImageSource, load_image

__all__ = [
    "OFA_MEAN",
    "OFA_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_tensor_normalized",
    "resize_bicubic",
    "patch_resize_transform",
    "ocr_transform",
    "ocr_layout",
    "ocr_square",
    "PatchTransform",
    "refcoco_output_size",
    "refcoco_transform",
    "RefcocoImage",
    "collate_images",
    "ImagePreprocess",
]

OFA_MEAN = (0.5, 0.5, 0.5)
OFA_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_size(size: object, what: str = "patch image size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) <= 0:
        raise OFAError(f"{what} must be a positive integer, got {size!r}")
    return int(size)


def to_tensor_normalized(
    image: Image.Image, mean: Sequence[float] = OFA_MEAN, std: Sequence[float] = OFA_STD
) -> torch.Tensor:
    """float32 ``(3, H, W)``: ``(pixel / 255 - mean) / std`` of an RGB image, computed in the
    order torchvision's ``ToTensor`` + ``Normalize`` use (so rounding is identical).

    Each channel's output depends only on its 8-bit level, so the 256 values per channel are
    computed once with those float32 ops and the image is a table lookup: the same bits, no
    full-image float passes, and no torch thread team (images are prepared in worker threads
    while the model runs, where a second parallel team would compete with the model's)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    table = _normalize_table(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    arr = np.asarray(image, dtype=np.uint8)
    out = np.empty((3, arr.shape[0], arr.shape[1]), dtype=np.float32)
    for c in range(3):
        np.take(table[c], arr[:, :, c], out=out[c])
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=16)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: ``(level / 255 - mean) / std`` for every 8-bit level, per channel."""
    if len(mean) not in (1, 3) or len(std) not in (1, 3):
        raise OFAError(f"normalisation takes 1 or 3 means and stds, got {list(mean)} and {list(std)}")
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1).expand(3, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1).expand(3, 1)
    if bool((s == 0).any()):
        raise OFAError(f"normalisation std must be non-zero, got {list(std)}")
    levels = torch.arange(256, dtype=torch.float32).div(255)[None]  # uint8 -> float32 is exact
    return levels.sub(m).div(s).numpy()


def resize_bicubic(image: Image.Image, width: int, height: int) -> Image.Image:
    """PIL bicubic resize, as torchvision's ``Resize`` on a PIL image (the image itself when the
    size already matches)."""
    if image.size == (width, height):
        return image  # torchvision returns the image untouched when the size already matches
    return image.resize((width, height), Image.Resampling.BICUBIC)


def ocr_transform(image: ImageSource, size: int, *, offset: int | None = None,
                  mean: Sequence[float] = OFA_MEAN, std: Sequence[float] = OFA_STD) -> torch.Tensor:
    """The original's OCR preprocessing: the long side resized to ``size`` and the short side to
    ``max(64, int(size * short / long))`` (bicubic), then edge padding (the border pixels
    repeated) to ``size`` x ``size``, the image placed ``offset`` pixels along its short side.
    The original draws the offset at random (``randint(0, size - short)``, unseeded) for training
    and evaluation alike; ``offset=None`` centres the image, the deterministic middle of that
    range, which we use for inference."""
    return to_tensor_normalized(ocr_square(image, size, offset=offset), mean, std)


def ocr_layout(width: int, height: int, size: int, offset: int | None = None) -> tuple[int, int, int, int]:
    """Where :func:`ocr_transform` puts an image of ``width`` x ``height``: its resized width and
    height and its top-left corner ``(x, y)`` in the ``size`` x ``size`` square."""
    if min(width, height) < 1:
        raise OFAError(f"image of {width}x{height} pixels has nothing to read")
    long_, short = max(width, height), min(width, height)
    if int(size * short / long_) < 1:
        raise OFAError(f"image of {width}x{height} pixels is too thin to read: its short side would be less than "
                       f"one pixel at {size}")
    new_short = min(size, max(64, int(size * short / long_)))
    room = size - new_short
    at = room // 2 if offset is None else int(offset)
    if not 0 <= at <= room:
        raise OFAError(f"ocr offset {at} is outside 0..{room}")
    return (size, new_short, 0, at) if width >= height else (new_short, size, at, 0)


def ocr_square(image: ImageSource, size: int, *, offset: int | None = None) -> Image.Image:
    """The ``size`` x ``size`` image :func:`ocr_transform` normalises (:func:`ocr_layout`)."""
    import numpy as np

    img = load_image(image)
    nw, nh, x, y = ocr_layout(*img.size, size, offset)
    img = resize_bicubic(img, nw, nh)
    pad = ((y, size - nh - y), (x, size - nw - x), (0, 0))
    return Image.fromarray(np.pad(np.asarray(img), pad, mode="edge"))


def patch_resize_transform(
    image: ImageSource,
    size: int,
    *,
    mean: Sequence[float] = OFA_MEAN,
    std: Sequence[float] = OFA_STD,
) -> torch.Tensor:
    """The caption/VQA/entailment transform: float32 ``(3, size, size)``.

    ``image`` is anything :func:`~openofa.vision.io.load_image` accepts.
    """
    size = _check_size(size)
    img = load_image(image)
    return to_tensor_normalized(resize_bicubic(img, size, size), mean, std)


class PatchTransform:
    """Callable form of :func:`patch_resize_transform` with a fixed size (e.g. 480 for base/large caption)."""

    def __init__(self, size: int, mean: Sequence[float] = OFA_MEAN, std: Sequence[float] = OFA_STD):
        self.size = _check_size(size)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, image: ImageSource) -> torch.Tensor:
        return patch_resize_transform(image, self.size, mean=self.mean, std=self.std)

    def __repr__(self) -> str:
        return f"PatchTransform(size={self.size}, mean={self.mean}, std={self.std})"


def refcoco_output_size(width: int, height: int, size: int = 512, max_size: Optional[int] = 512) -> tuple[int, int]:
    """``(new_width, new_height)`` chosen by the original's ``RandomResize([size], max_size)``.

    Short side -> ``size``, long side -> ``int(size * long / short)``, both clamped to
    ``max_size``. With ``size == max_size`` (every official config) the result is always
    ``(size, size)``.
    """
    w, h = int(width), int(height)
    if w <= 0 or h <= 0:
        raise OFAError(f"image size must be positive, got {w}x{h}")
    size = _check_size(size)
    if (w <= h and w == size) or (h <= w and h == size):
        ow, oh = w, h
    elif w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    if max_size is not None:
        m = int(max_size)
        ow, oh = min(ow, m), min(oh, m)
    return ow, oh


class RefcocoImage(NamedTuple):
    """Output of :func:`refcoco_transform`."""

    patch_image: torch.Tensor  # float32 (3, H', W') (512x512 for every official config)
    w_resize_ratio: float  # W' / W, a float32 value like the original's tensor
    h_resize_ratio: float  # H' / H
    box: Optional[list[float]]  # the input box scaled into the resized image (float32 values), or None
    resized_size: tuple[int, int]  # (W', H')
    original_size: tuple[int, int]  # (W, H)


def refcoco_transform(
    image: ImageSource,
    box: Optional[Sequence[float]] = None,
    *,
    size: int = 512,
    max_size: Optional[int] = 512,
    mean: Sequence[float] = OFA_MEAN,
    std: Sequence[float] = OFA_STD,
) -> RefcocoImage:
    """The visual grounding transform of ``RefcocoDataset``.

    ``box`` (x1, y1, x2, y2 in original pixels) is optional; when given it is scaled like the
    original does (``box * float32([rw, rh, rw, rh])`` with ``rw = W'/W`` in float64 first),
    ready for :func:`openofa.text.locations.quantize_box`. Validate it first with
    :func:`openofa.vision.boxes.validate_box` if it comes from user input.
    """
    img = load_image(image)
    w, h = img.size
    ow, oh = refcoco_output_size(w, h, size, max_size)
    patch = to_tensor_normalized(resize_bicubic(img, ow, oh), mean, std)
    scaled = None
    if box is not None:
        from openofa.text.locations import scale_box

        scaled = scale_box(box, float(ow) / float(w), float(oh) / float(h))
    # The dataset's ratios are int64 tensor / int -> float32 division.
    w_ratio = float(torch.tensor(ow) / w)
    h_ratio = float(torch.tensor(oh) / h)
    return RefcocoImage(patch, w_ratio, h_ratio, scaled, (ow, oh), (w, h))


def collate_images(
    images: Sequence[Optional[torch.Tensor]], *, size: Optional[int] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-sample images into ``patch_images`` float32 ``(B, 3, S, S)`` and
    ``patch_masks`` bool ``(B,)``.

    ``None`` stands for a sample without an image: it gets a zero image and mask False, as the
    original's text-only datasets do (the encoder then ignores its image positions). ``size``
    is required only if every entry is ``None``.
    """
    if isinstance(images, torch.Tensor):
        images = list(images)
    if len(images) == 0:
        raise OFAError("collate_images got an empty batch")
    shape = None
    for i, im in enumerate(images):
        if im is None:
            continue
        if not isinstance(im, torch.Tensor) or im.dim() != 3 or im.shape[0] != 3:
            got = tuple(im.shape) if isinstance(im, torch.Tensor) else type(im).__name__
            raise OFAError(f"image {i} of the batch must be a (3, H, W) tensor, got {got}")
        if shape is None:
            shape = tuple(im.shape)
        elif tuple(im.shape) != shape:
            raise OFAError(f"image {i} of the batch has shape {tuple(im.shape)}, expected {shape} like the first")
    if shape is None:
        if size is None:
            raise OFAError("collate_images: every sample lacks an image; pass size= for the placeholder")
        s = _check_size(size)
        shape = (3, s, s)
    elif size is not None and shape[1:] != (size, size):
        raise OFAError(f"images have shape {shape}, but size={size} was requested")
    zeros = torch.zeros(shape, dtype=torch.float32)
    patch_images = torch.stack([zeros if im is None else im.to(torch.float32) for im in images], dim=0)
    patch_masks = torch.tensor([im is not None for im in images], dtype=torch.bool)
    return patch_images, patch_masks


RESIZE_MODES = ("square", "refcoco", "ocr")


@dataclass(frozen=True)
class ImagePreprocess:
    """How a model's images are prepared, stored with its weights (the checkpoint's task settings):
    ``mode`` "square" is :func:`patch_resize_transform` to ``size`` x ``size`` (captioning, VQA,
    entailment, classification); "refcoco" is :func:`refcoco_transform` with ``size`` and
    ``max_size`` (grounding); "ocr" is :func:`ocr_transform` (text recognition). Calling it gives ``(tensor, width, height)`` of the original image."""

    size: int
    mean: tuple[float, float, float] = OFA_MEAN
    std: tuple[float, float, float] = OFA_STD
    mode: str = "square"
    max_size: Optional[int] = None

    def __post_init__(self) -> None:
        _check_size(self.size)
        if self.mode not in RESIZE_MODES:
            raise OFAError(f"unknown resize mode {self.mode!r}; expected one of {', '.join(RESIZE_MODES)}")

    def __call__(self, image: ImageSource) -> tuple[torch.Tensor, int, int]:
        img = load_image(image)
        if self.mode == "ocr":
            return ocr_transform(img, self.size, mean=self.mean, std=self.std), img.size[0], img.size[1]
        if self.mode == "refcoco":
            max_size = self.size if self.max_size is None else self.max_size
            tensor = refcoco_transform(img, size=self.size, max_size=max_size, mean=self.mean, std=self.std).patch_image
        else:
            tensor = to_tensor_normalized(resize_bicubic(img, self.size, self.size), self.mean, self.std)
        return tensor, img.size[0], img.size[1]
