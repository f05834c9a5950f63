"""Training-time image augmentation of the original's image classification finetuning.

``ImageClassifyDataset`` (train split) runs: RGB -> timm ``RandomResizedCropAndInterpolation``
(scale 0.08..1, ratio 3/4..4/3, bicubic) -> ``RandomHorizontalFlip(0.5)`` -> timm
``RandAugment('rand-m9-mstd0.5-inc1')`` -> OFA's ``RandomAugment(2, 7, ...)`` -> ToTensor ->
Normalize (ImageNet statistics) -> timm ``RandomErasing(0.25, mode='pixel', count 1)``.

Reproduced here with PIL + torch: the random resized crop, the flip, OFA's ``RandomAugment``
(same ops, magnitudes, probabilities and fill value; the geometric ops use PIL's bilinear
affine warp where the original uses OpenCV's, so pixels differ slightly at edges) and the
random erasing. Not reproduced: timm's ``RandAugment`` policy.

Pretraining (the original's ``UnifyDataset``, training split), also here:

* image-text pairs (caption, qa): ``RandomResize(scales, max_size=672)`` (short side to a random
  scale of ``patch_image_size .. 480``, both sides clamped to 672) -> centre crop to
  ``patch_image_size`` -> ``RandomAugment(2, 7)`` -> ToTensor -> Normalize
  (:class:`PretrainPairTransform`);
* visual grounding: the same random resize with the box -> a crop of ``patch_image_size``
  centred on the box as far as the image allows (:func:`object_center_crop`; the box is clamped
  to the crop, never dropped);
* detection: horizontal flip (probability 0.5) -> large-scale jitter (:func:`large_scale_jitter`:
  scale the image so that its *short* side is a random 1..1.5 times the output size, then a random
  output-size crop); boxes follow, and boxes left with no area are dropped with their labels;
* image infilling: none (the original reads the image as it is).

Boxes are ``(N, 4)`` float32 tensors ``x1, y1, x2, y2`` in pixels, transformed with the
original's float32 arithmetic. As in the original, the object-centred crop moves the box by the
exact (fractional) offset while the image is cropped at the offset rounded to whole pixels, so
the two can disagree by up to half a pixel.

All randomness comes from torch's global generator, which DataLoader seeds per worker and the
trainer per example (``seeded_examples``), so an example's augmentation depends only on the
run's seed, the epoch and the example's index.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from PIL import Image, ImageEnhance, ImageOps

from openofa.vision.transforms import IMAGENET_MEAN, IMAGENET_STD, OFA_MEAN, OFA_STD, refcoco_output_size, \
    resize_bicubic, to_tensor_normalized

__all__ = ["random_resized_crop", "random_hflip", "RandomAugment", "random_erasing", "ClassifyTrainTransform",
           "pretrain_scales", "random_resize", "center_crop", "object_center_crop", "hflip_boxes",
           "large_scale_jitter", "crop_boxes", "PretrainPairTransform", "PRETRAIN_MAX_SIZE"]


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _randint(lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi]`` (inclusive, like ``random.randint``)."""
    return int(torch.randint(lo, hi + 1, ()))


def random_resized_crop(img: Image.Image, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """timm's ``RandomResizedCropAndInterpolation`` with bicubic resampling."""
    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = _uniform(*scale) * area
        aspect = math.exp(_uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if w <= width and h <= height:
            top = _randint(0, height - h)
            left = _randint(0, width - w)
            break
    else:  # fall back to a central crop with the ratio clamped
        in_ratio = width / height
        if in_ratio < min(ratio):
            w, h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = height, int(round(height * max(ratio)))
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
    crop = img.crop((left, top, left + w, top + h))
    return crop.resize((size, size), Image.Resampling.BICUBIC)


def random_hflip(img: Image.Image, p: float = 0.5) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if float(torch.rand(())) < p else img


_FILL = (128, 128, 128)
_MAX_LEVEL = 10


def _signed(v: float) -> float:
    return -v if float(torch.rand(())) > 0.5 else v


def _affine(img: Image.Image, data) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR,
                         fillcolor=_FILL)


def _brightness(img: Image.Image, factor: float) -> Image.Image:
    table = [min(255, max(0, int(v * factor))) for v in range(256)]
    return img.point(table * len(img.getbands()))


class RandomAugment:
    """OFA's ``utils/vision_helper.RandomAugment(N, M, augs)``: draw ``N`` ops (with
    replacement), apply each with probability 0.5 at magnitude ``M`` (random sign for the
    geometric ones)."""

    OPS = ("Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness", "ShearX", "ShearY",
           "TranslateX", "TranslateY", "Rotate")

    def __init__(self, n: int = 2, m: int = 7, augs: Sequence[str] = OPS):
        unknown = set(augs) - set(self.OPS)
        if unknown:
            raise ValueError(f"unknown augmentations {sorted(unknown)}")
        self.n, self.m, self.augs = n, m, tuple(augs)

    def __call__(self, img: Image.Image) -> Image.Image:
        for _ in range(self.n):
            name = self.augs[int(torch.randint(len(self.augs), ()))]
            if float(torch.rand(())) > 0.5:
                continue
            img = self.apply(img, name)
        return img

    def apply(self, img: Image.Image, name: str) -> Image.Image:
        level = self.m / _MAX_LEVEL
        if name == "Identity":
            return img
        if name == "AutoContrast":
            return ImageOps.autocontrast(img)
        if name == "Equalize":
            return ImageOps.equalize(img)
        if name == "Brightness":
            return _brightness(img, level * 1.8 + 0.1)
        if name == "Sharpness":
            return ImageEnhance.Sharpness(img).enhance(level * 1.8 + 0.1)
        if name == "ShearX":
            return _affine(img, (1, -_signed(level * 0.3), 0, 0, 1, 0))
        if name == "ShearY":
            return _affine(img, (1, 0, 0, -_signed(level * 0.3), 1, 0))
        if name == "TranslateX":
            return _affine(img, (1, 0, _signed(level * 10.0), 0, 1, 0))
        if name == "TranslateY":
            return _affine(img, (1, 0, 0, 0, 1, _signed(level * 10.0)))
        if name == "Rotate":
            degrees = level * 30 * (-1 if float(torch.rand(())) < 0.5 else 1)
            return img.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=_FILL)
        raise ValueError(name)  # pragma: no cover


def random_erasing(t: torch.Tensor, p: float = 0.25, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3)) -> torch.Tensor:
    """timm's ``RandomErasing(p, mode='pixel', max_count=1)`` on a normalised ``(C, H, W)``
    tensor: one rectangle filled with standard-normal noise per pixel."""
    if float(torch.rand(())) >= p:
        return t
    c, height, width = t.shape
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = _uniform(*scale) * area
        aspect = math.exp(_uniform(*log_ratio))
        h = int(round(math.sqrt(target_area * aspect)))
        w = int(round(math.sqrt(target_area / aspect)))
        if w < width and h < height:
            top = _randint(0, height - h)
            left = _randint(0, width - w)
            t = t.clone()
            t[:, top:top + h, left:left + w] = torch.randn(c, h, w, dtype=t.dtype)
            break
    return t


class ClassifyTrainTransform:
    """The training transform of image classification (see the module doc)."""

    def __init__(self, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, random_augment: bool = True,
                 erase_prob: float = 0.25):
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.augment = RandomAugment(2, 7) if random_augment else None
        self.erase_prob = erase_prob

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = random_hflip(random_resized_crop(img.convert("RGB"), self.size))
        if self.augment is not None:
            img = self.augment(img)
        t = to_tensor_normalized(img, self.mean, self.std)
        return random_erasing(t, self.erase_prob) if self.erase_prob > 0 else t


# ---- pretraining --------------------------------------------------------------------------------------
PRETRAIN_MAX_SIZE = 672  # RandomResize's max_size for image-text pairs and grounding
_PRETRAIN_MAX_SCALE = 480  # the random short side goes up to this


def pretrain_scales(size: int) -> list[int]:
    """The original's ``arange(patch_image_size, 481)`` (just ``[size]`` beyond 480)."""
    return list(range(size, max(size, _PRETRAIN_MAX_SCALE) + 1))


def _boxes(boxes) -> torch.Tensor:
    return torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def random_resize(img: Image.Image, boxes=None, scales: Sequence[int] = (384,),
                  max_size: int | None = PRETRAIN_MAX_SIZE) -> tuple[Image.Image, torch.Tensor | None]:
    """Short side to a random entry of ``scales`` (aspect ratio kept, both sides clamped to
    ``max_size``), bicubic; boxes scaled by the same ratios."""
    size = int(scales[_randint(0, len(scales) - 1)])
    w, h = img.size
    ow, oh = refcoco_output_size(w, h, size, max_size)
    out = resize_bicubic(img, ow, oh)
    if boxes is not None:
        rw, rh = float(ow) / float(w), float(oh) / float(h)
        boxes = _boxes(boxes) * torch.as_tensor([rw, rh, rw, rh])
    return out, boxes


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision's ``CenterCrop(size)`` (offsets rounded; black fill where the image is smaller)."""
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def crop_boxes(boxes: torch.Tensor, left: float, top: float, width: int, height: int) -> torch.Tensor:
    """Boxes in the coordinates of the crop ``(left, top, width, height)``, clamped to it."""
    out = _boxes(boxes) - torch.as_tensor([left, top, left, top])
    out = torch.min(out.reshape(-1, 2, 2), torch.as_tensor([width, height], dtype=torch.float32))
    return out.clamp(min=0).reshape(-1, 4)


def object_center_crop(img: Image.Image, boxes, size: int) -> tuple[Image.Image, torch.Tensor]:
    """A ``size`` square centred on the first box, shifted to stay inside the image where it
    can; the boxes move with it and are clamped to the crop."""
    boxes = _boxes(boxes)
    w, h = img.size
    x0, y0, x1, y1 = (float(v) for v in boxes[0])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = max(cx - size / 2 + min(w - cx - size / 2, 0), 0)
    top = max(cy - size / 2 + min(h - cy - size / 2, 0), 0)
    out = img.crop((left, top, left + size, top + size))  # PIL rounds the corners to whole pixels
    return out, crop_boxes(boxes, left, top, size, size)


def hflip_boxes(boxes, width: int) -> torch.Tensor:
    b = _boxes(boxes)
    return b[:, [2, 1, 0, 3]] * torch.as_tensor([-1, 1, -1, 1]) + torch.as_tensor([width, 0, width, 0])


def large_scale_jitter(img: Image.Image, boxes, output_size: int, scale_min: float = 1.0,
                       scale_max: float = 1.5) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
    """The original's ``LargeScaleJitter`` (scales >= 1 only): resize so that the short side is
    ``output_size`` times a random factor in ``[scale_min, scale_max)``, then crop an
    ``output_size`` square at a random offset. Returns the image, the boxes in it and a bool
    mask of the boxes kept (those with some area left)."""
    if scale_min < 1.0:
        raise ValueError("large_scale_jitter: scales below 1 (padding) are not supported")
    w, h = img.size
    hw = torch.tensor([h, w])
    factor = torch.rand(1) * (scale_max - scale_min) + scale_min
    target = (factor * torch.tensor([output_size])).round()
    scale = torch.maximum(target / hw[0], target / hw[1])
    sh, sw = (hw * scale).round().int().tolist()
    out = resize_bicubic(img, sw, sh)
    ratio_h, ratio_w = (torch.tensor([sh, sw]) / hw).tolist()
    b = _boxes(boxes) * torch.as_tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=torch.float32)
    top, left = ((torch.tensor([sh, sw]) - output_size) * torch.rand(2)).floor().int().tolist()
    out = out.crop((left, top, left + output_size, top + output_size))
    b = crop_boxes(b, left, top, output_size, output_size)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return out, b[keep], keep


class PretrainPairTransform:
    """The image transform of the original's pretraining image-text pairs (see the module doc)."""

    def __init__(self, size: int, mean=OFA_MEAN, std=OFA_STD, max_size: int = PRETRAIN_MAX_SIZE):
        self.size, self.mean, self.std, self.max_size = size, tuple(mean), tuple(std), max_size
        self.scales = pretrain_scales(size)
        self.augment = RandomAugment(2, 7)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img, _ = random_resize(img.convert("RGB"), None, self.scales, self.max_size)
        img = self.augment(center_crop(img, self.size))
        return to_tensor_normalized(img, self.mean, self.std)
