"""Training-time image augmentation of the original's image classification finetuning.

``ImageClassifyDataset`` (train split) runs: RGB -> timm ``RandomResizedCropAndInterpolation``
(scale 0.08..1, ratio 3/4..4/3, bicubic) -> ``RandomHorizontalFlip(0.5)`` -> timm
``RandAugment('rand-m9-mstd0.5-inc1')`` -> OFA's ``RandomAugment(2, 7, ...)`` -> ToTensor ->
Normalize (ImageNet statistics) -> timm ``RandomErasing(0.25, mode='pixel', count 1)``.

Reproduced here with PIL + torch: the random resized crop, the flip, OFA's ``RandomAugment``
(same ops, magnitudes, probabilities and fill value; the geometric ops use PIL's bilinear
affine warp where the original uses OpenCV's, so pixels differ slightly at edges) and the
random erasing. Not reproduced: timm's ``RandAugment`` policy. All randomness comes from
torch's global generator, which DataLoader seeds per worker.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from PIL import Image, ImageEnhance, ImageOps

from openofa.vision.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor_normalized

__all__ = ["random_resized_crop", "random_hflip", "RandomAugment", "random_erasing", "ClassifyTrainTransform"]


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
