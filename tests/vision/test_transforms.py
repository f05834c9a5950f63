"""Image transforms against the original's tensors (tests/fixtures/golden/preprocess.npz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openofa.errors import OFAError
from openofa.vision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFA_MEAN,
    OFA_STD,
    PatchTransform,
    collate_images,
    load_image,
    patch_resize_transform,
    refcoco_output_size,
    refcoco_transform,
    to_tensor_normalized,
)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
META = json.loads((GOLDEN / "preprocess.json").read_text())
NAMES = list(META["images"])


@pytest.fixture(scope="module")
def npz():
    with np.load(GOLDEN / "preprocess.npz") as z:
        return {k: z[k] for k in z.files}


def _path(name: str) -> Path:
    return GOLDEN / "images" / f"{name}.png"


@pytest.mark.parametrize("name", NAMES)
def test_decoded_pixels(npz, name):
    img = Image.open(_path(name))
    assert img.mode == META["images"][name]["mode"]
    assert list(img.size) == META["images"][name]["size_wh"]
    assert np.array_equal(np.asarray(img), npz[f"image_uint8/{name}"])
    rgb = load_image(_path(name))
    assert rgb.mode == "RGB" and rgb.size == img.size


@pytest.mark.parametrize("size", [256, 384, 480])
@pytest.mark.parametrize("name", NAMES)
def test_caption_transform_bit_exact(npz, name, size):
    out = patch_resize_transform(_path(name), size)
    ref = torch.from_numpy(npz[f"caption{size}/{name}"])
    assert out.dtype == torch.float32 and out.shape == (3, size, size)
    assert out.is_contiguous()
    assert torch.equal(out, ref), f"max abs diff {float((out - ref).abs().max())}"


def test_patch_transform_callable_and_sources(npz):
    t = PatchTransform(256)
    ref = torch.from_numpy(npz["caption256/c_320x240_gray"])
    path = _path("c_320x240_gray")
    assert torch.equal(t(path), ref)
    assert torch.equal(t(str(path)), ref)
    assert torch.equal(t(path.read_bytes()), ref)
    assert torch.equal(t(Image.open(path)), ref)  # mode L converted to RGB like the original


@pytest.mark.parametrize("name", NAMES)
def test_refcoco_transform_bit_exact(npz, name):
    r = META["refcoco"][name]
    box = [float(v) for v in r["box"].split(",")]
    out = refcoco_transform(_path(name), box)
    assert tuple(out.patch_image.shape) == tuple(r["patch_image_shape"]) == (3, 512, 512)
    assert torch.equal(out.patch_image, torch.from_numpy(npz[f"refcoco512/{name}"]))
    assert out.w_resize_ratio == r["w_resize_ratio"]  # float32 values, exactly
    assert out.h_resize_ratio == r["h_resize_ratio"]
    assert out.resized_size == (512, 512)
    assert out.original_size == tuple(META["images"][name]["size_wh"])
    from openofa.text import box_to_ids

    assert box_to_ids(out.box) + [2] == r["target_ids"]


def test_refcoco_transform_without_box():
    out = refcoco_transform(_path("a_200x150_rgb"))
    assert out.box is None and out.patch_image.shape == (3, 512, 512)


def test_refcoco_output_size_rule():
    # short side -> 512, long side int(512*long/short), both clamped to max_size
    assert refcoco_output_size(640, 480) == (512, 512)
    assert refcoco_output_size(100, 1000) == (512, 512)
    assert refcoco_output_size(512, 300) == (512, 512)
    assert refcoco_output_size(640, 480, size=256, max_size=None) == (341, 256)
    assert refcoco_output_size(300, 700, size=256, max_size=None) == (256, 597)
    assert refcoco_output_size(256, 700, size=256, max_size=None) == (256, 700)
    assert refcoco_output_size(640, 480, size=256, max_size=300) == (300, 256)
    with pytest.raises(OFAError, match="0x5"):
        refcoco_output_size(0, 5)


def test_collate_matches_original_batch(npz):
    order = META["caption"]["batch_order"]
    imgs = [patch_resize_transform(_path(n), 384) for n in order]
    patch_images, patch_masks = collate_images(imgs)
    assert torch.equal(patch_images, torch.from_numpy(npz["caption384_batch/patch_images"]))
    assert torch.equal(patch_masks, torch.from_numpy(npz["caption384_batch/patch_masks"]))
    assert patch_masks.dtype == torch.bool


def test_collate_missing_images():
    img = torch.ones(3, 8, 8)
    patch_images, patch_masks = collate_images([None, img])
    assert patch_masks.tolist() == [False, True]
    assert torch.equal(patch_images[0], torch.zeros(3, 8, 8)) and torch.equal(patch_images[1], img)
    pi, pm = collate_images([None, None], size=4)
    assert pi.shape == (2, 3, 4, 4) and pm.tolist() == [False, False]


def test_collate_errors():
    with pytest.raises(OFAError, match="empty batch"):
        collate_images([])
    with pytest.raises(OFAError, match="size="):
        collate_images([None])
    with pytest.raises(OFAError, match=r"image 1 .*\(3, 4, 4\)"):
        collate_images([torch.zeros(3, 8, 8), torch.zeros(3, 4, 4)])
    with pytest.raises(OFAError, match="image 0"):
        collate_images([torch.zeros(8, 8)])


def test_size_and_std_validation():
    with pytest.raises(OFAError, match="positive integer"):
        patch_resize_transform(_path("a_200x150_rgb"), 0)
    with pytest.raises(OFAError, match="positive integer"):
        PatchTransform(2.5)  # type: ignore[arg-type]
    with pytest.raises(OFAError, match="std"):
        to_tensor_normalized(Image.new("RGB", (2, 2)), std=(0.0, 1.0, 1.0))
    with pytest.raises(OFAError, match="1 or 3 means"):
        to_tensor_normalized(Image.new("RGB", (2, 2)), mean=(0.5, 0.5))


@pytest.mark.parametrize("mean, std", [(OFA_MEAN, OFA_STD), (IMAGENET_MEAN, IMAGENET_STD), ((0.25,), (0.7,))])
def test_normalisation_is_torchvisions_float32_arithmetic_bit_for_bit(mean, std):
    """Every 8-bit level of every channel, against ToTensor + Normalize's float32 ops."""
    levels = np.arange(256, dtype=np.uint8)
    arr = np.stack([levels, levels[::-1], np.roll(levels, 77)], axis=-1).reshape(16, 16, 3)
    got = to_tensor_normalized(Image.fromarray(arr), mean, std)
    x = torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32).div(255)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    want = x.sub(m).div(s)
    assert got.dtype == torch.float32 and got.shape == (3, 16, 16) and got.is_contiguous()
    assert torch.equal(got, want)


def test_normalisation_values():
    img = Image.new("RGB", (2, 1), (0, 255, 128))
    t = to_tensor_normalized(img)
    assert t[:, 0, 0].tolist() == [-1.0, 1.0, pytest.approx(128 / 255 * 2 - 1, abs=1e-7)]
