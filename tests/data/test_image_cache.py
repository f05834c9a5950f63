"""Decoded image files kept in memory: the same pixels and samples as without the cache, each
file decoded once, a rewritten file decoded again, a byte budget, bad files still named."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from datafiles import IMAGES, write_jsonl
from openofa.data import build_dataset
from openofa.data.image_cache import DecodedImages
from openofa.data.records import BadRow
from openofa.vision.io import load_image


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "data"
    (d / "images").mkdir(parents=True)
    for name in ("a_200x150_rgb", "b_640x480_rgb", "c_320x240_gray"):
        shutil.copy(IMAGES / f"{name}.png", d / "images" / f"{name}.png")
    return d


def test_a_kept_image_has_the_same_pixels_and_is_decoded_once(image_dir):
    cache = DecodedImages(max_mb=16)
    path = image_dir / "images" / "c_320x240_gray.png"  # grey on disk: kept as the RGB it decodes to
    decoded = []

    def decode(p):
        decoded.append(p)
        return load_image(p)

    first = cache.load(path, decode)
    second = cache.load(path, decode)
    assert len(decoded) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert second.mode == "RGB" and second.size == (320, 240)
    assert np.array_equal(np.asarray(second), np.asarray(load_image(path)))
    assert np.array_equal(np.asarray(first), np.asarray(second))
    second.putpixel((0, 0), (1, 2, 3))  # a caller changing its copy does not change what is kept
    assert np.array_equal(np.asarray(cache.load(path, decode)), np.asarray(load_image(path)))
    assert cache.bytes == 320 * 240 * 3


def test_a_rewritten_file_is_decoded_again(image_dir):
    cache = DecodedImages(max_mb=16)
    path = image_dir / "images" / "a_200x150_rgb.png"
    before = np.asarray(cache.load(path, load_image)).copy()
    Image.new("RGB", (200, 150), (9, 99, 199)).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later modification time for sure
    after = np.asarray(cache.load(path, load_image))
    assert cache.misses == 2 and not np.array_equal(before, after)
    assert tuple(after[0, 0]) == (9, 99, 199)


def test_the_budget_bounds_what_is_kept(image_dir):
    cache = DecodedImages(max_mb=0.2)  # room for a 200x150 image (90 kB), not for 640x480 (922 kB)
    small, large = image_dir / "images" / "a_200x150_rgb.png", image_dir / "images" / "b_640x480_rgb.png"
    for _ in range(2):
        cache.load(large, load_image)
        cache.load(small, load_image)
    assert (cache.hits, cache.misses, len(cache.store)) == (1, 3, 1)
    assert cache.bytes == 200 * 150 * 3
    with pytest.raises(ValueError, match="image cache size"):
        DecodedImages(max_mb=-1)


def test_a_copy_for_a_worker_starts_empty(image_dir):
    cache = DecodedImages(max_mb=16)
    cache.load(image_dir / "images" / "a_200x150_rgb.png", load_image)
    copy = pickle.loads(pickle.dumps(cache))
    assert len(cache.store) == 1 and copy.store == {} and copy.bytes == 0 and copy.max_bytes == cache.max_bytes


def test_datasets_give_the_same_samples_with_the_cache_and_bad_files_are_still_named(image_dir):
    rows = [{"image": "images/a_200x150_rgb.png", "text": "the square", "box": [20, 30, 80, 100]},
            {"image": "images/b_640x480_rgb.png", "text": "the circle", "box": [100, 40, 300, 200]},
            {"image": "images/a_200x150_rgb.png", "text": "the corner", "box": [0, 0, 50, 50]}]
    path = write_jsonl(image_dir / "ground.jsonl", rows)
    cache = DecodedImages(max_mb=16)
    plain = build_dataset("ground", path, patch_image_size=64, shard=None)
    cached = build_dataset("ground", path, patch_image_size=64, shard=None, image_cache=cache)
    for _ in range(2):
        for i in range(len(rows)):
            a, b = plain[i], cached[i]
            assert torch.equal(a["patch_image"], b["patch_image"])
            assert torch.equal(a["target"], b["target"]) and torch.equal(a["source"], b["source"])
    assert (cache.misses, cache.hits) == (2, 4)  # two files, six reads
    (image_dir / "images" / "b_640x480_rgb.png").write_bytes(b"not a png")
    with pytest.raises(BadRow, match=r"ground\.jsonl:2: not an image.*b_640x480_rgb\.png"):
        cached[1]
