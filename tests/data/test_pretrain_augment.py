"""Random augmentation of the pretraining samples (the original's UnifyDataset transforms): boxes
follow the image, the result depends only on (seed, epoch, index), and evaluation is untouched."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from datafiles import write_tsv
from PIL import Image, ImageDraw

from openofa.data import build_dataset
from openofa.data.augment import (PretrainPairTransform, center_crop, hflip_boxes, large_scale_jitter,
                                  object_center_crop, pretrain_scales, random_resize)
from openofa.text.locations import ids_to_bins
from openofa.train.batches import EpochItems

VOCAB, BINS, MAX_IMAGE = 59457, 1000, 512
RED, GREEN = (255, 0, 0), (0, 255, 0)


def scene(size=(640, 480), rects=(((100, 60, 300, 200), RED), ((400, 250, 600, 460), GREEN))) -> Image.Image:
    img = Image.new("RGB", size, (0, 0, 255))
    draw = ImageDraw.Draw(img)
    for (x1, y1, x2, y2), color in rects:
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=color)
    return img


def b64png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def extent(image, color) -> list[float] | None:
    """Pixel box of the area of one colour in a normalised (3, H, W) tensor or a PIL image."""
    t = image if isinstance(image, torch.Tensor) else \
        torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1
    want = torch.tensor(color, dtype=torch.float32)[:, None, None] / 127.5 - 1
    hit = ((t - want).abs() < 0.5).all(0)
    if not hit.any():
        return None
    ys, xs = hit.nonzero(as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


def close(a, b, tol):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def test_functions_move_boxes_with_the_image():
    img = scene()
    boxes = torch.tensor([[100, 60, 300, 200], [400, 250, 600, 460]], dtype=torch.float32)
    for seed in range(6):
        torch.manual_seed(seed)
        out, b = random_resize(img, boxes, pretrain_scales(384), 672)
        assert min(out.size) in range(384, 481) and max(out.size) <= 672
        assert close(extent(out, RED), b[0].tolist(), 2) and close(extent(out, GREEN), b[1].tolist(), 2)
        crop, cb = object_center_crop(out, b, 384)
        assert crop.size == (384, 384)
        assert close(extent(crop, RED), cb[0].tolist(), 2.5)  # the half-pixel of the original's crop
        flipped = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        fb = hflip_boxes(boxes, img.size[0])
        assert close(extent(flipped, RED), fb[0].tolist(), 0)
        jit, jb, keep = large_scale_jitter(flipped, fb, 256)
        assert jit.size == (256, 256) and keep.sum() == jb.shape[0]
        for color, box in zip([c for c, k in zip((RED, GREEN), keep.tolist()) if k], jb.tolist()):
            assert close(extent(jit, color), box, 2)
    assert center_crop(Image.new("RGB", (500, 400)), 384).size == (384, 384)


def test_grounding_box_follows_the_image(tmp_path):
    f = write_tsv(tmp_path / "vl.tsv", [[1, b64png(scene()), "the red box", "", "100,60,300,200", "", "r",
                                          "visual_grounding"]])
    ds = build_dataset("pretrain_vl", f, patch_image_size=384)
    seen = set()
    for index in range(8):
        with torch.random.fork_rng():
            torch.manual_seed(index)
            box, region = ds[0]
        assert box["patch_image"].shape == (3, 384, 384)
        bins = ids_to_bins(box["target"][:4], vocab_size=VOCAB, num_bins=BINS).tolist()
        pixels = [k / (BINS - 1) * MAX_IMAGE for k in bins]
        assert close(extent(box["patch_image"], RED), pixels, 3)
        assert region["source"][-5:-1].tolist() == box["target"][:4].tolist()
        seen.add(tuple(bins))
    assert len(seen) > 1  # the random scale moves the box


def test_detection_boxes_follow_the_image(tmp_path):
    f = write_tsv(tmp_path / "det.tsv", [[1, b64png(scene()), "100,60,300,200,1,red&&400,250,600,460,2,green"]])
    ds = build_dataset("pretrain_detection", f)
    from openofa.text import OFATokenizer

    tok = OFATokenizer.from_language("en")
    names = {tuple(tok.encode(" red")): RED, tuple(tok.encode(" green")): GREEN}
    flips = set()
    for index in range(10):
        with torch.random.fork_rng():
            torch.manual_seed(index)
            s = ds[0]
        image, tgt = s["patch_image"], s["target"][:-1].tolist()
        assert image.shape == (3, 256, 256)
        found = 0
        while tgt:
            bins = ids_to_bins(torch.tensor(tgt[:4]), vocab_size=VOCAB, num_bins=BINS).tolist()
            word = tuple(tgt[4:5])
            color = names[word]
            pixels = [k / (BINS - 1) * MAX_IMAGE for k in bins]
            box = extent(image, color)
            assert box is not None and close(box, pixels, 3)
            tgt = tgt[5:]
            found += 1
            if color == RED:
                flips.add(box[0] > 128)
        assert found == sum(extent(image, c) is not None and _area(extent(image, c)) > 4 for c in (RED, GREEN))
    assert flips == {True, False}  # both orientations occur


def _area(b):
    return (b[2] - b[0]) * (b[3] - b[1])


def test_same_seed_and_index_same_sample_and_evaluation_plain(tmp_path):
    rows = [[i, b64png(scene()), "a red box", "", "", "box", "coco", "caption"] for i in range(3)]
    rows.append([3, b64png(scene()), "the red box", "", "100,60,300,200", "", "r", "visual_grounding"])
    f = write_tsv(tmp_path / "vl.tsv", rows)
    train = build_dataset("pretrain_vl", f, patch_image_size=96)
    a = EpochItems(train, seed=3, epoch=0)
    b = EpochItems(train, seed=3, epoch=0)
    for i in (0, 1, 3):
        assert torch.equal(a[i][0][0]["patch_image"], b[i][0][0]["patch_image"])
        assert torch.equal(a[i][0][0]["target"], b[i][0][0]["target"])
    images = [a[i][0][0]["patch_image"] for i in range(3)] + [EpochItems(train, 3, 1)[0][0][0]["patch_image"]]
    assert not all(torch.equal(images[0], im) for im in images[1:])  # other index or epoch: other draw
    # evaluation: no augmentation, the plain resize
    valid = build_dataset("pretrain_vl", f, patch_image_size=96, split="valid")
    plain = build_dataset("pretrain_vl", f, patch_image_size=96, train_augment=False)
    assert torch.equal(valid[0][0]["patch_image"], plain[0][0]["patch_image"])
    assert torch.equal(valid[3][0]["target"], plain[3][0]["target"])
    assert isinstance(train.builder.image_transform, PretrainPairTransform)
    assert valid.builder.image_transform is None and not valid.builder.augment


@pytest.mark.parametrize("size", [256, 384, 480, 512])
def test_pair_transform_size(size):
    torch.manual_seed(0)
    out = PretrainPairTransform(size)(scene((300, 200)))
    assert out.shape == (3, size, size)
    assert pretrain_scales(size)[0] == size and pretrain_scales(size)[-1] == max(size, 480)
