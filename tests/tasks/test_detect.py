"""The detect task: decoding a sequence of boxes and labels, its training samples, and the
command line (the project's own model, which learnt it, is checked in tests/test_own_model.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from openofa.tasks import get_task


class _Runner:
    """Just what Detect.parse reads of a runner: the vocabulary's layout and a text decoder."""

    def __init__(self):
        self.model = SimpleNamespace(config=SimpleNamespace(bin_0=100, num_bins=64, eos=2))
        self.words = {10: " red", 11: " square", 12: " blue", 13: " circle"}

    def decode_text(self, ids):
        return "".join(self.words[i] for i in ids)


def test_every_group_of_four_bins_and_words_is_an_object():
    detect, run = get_task("detect"), _Runner()
    info = {"w": 200, "h": 100, "size": 64}
    ids = [100 + 0, 100 + 0, 100 + 63, 100 + 63, 10, 11,  # the whole image
           100 + 40, 100 + 10, 100 + 20, 100 + 30, 12, 13,  # x2 < x1: ordered, not inverted
           100 + 1, 100 + 2, 100 + 3, 13,  # three bins: dropped
           100 + 5, 100 + 5, 100 + 9, 100 + 9,  # no label: dropped
           2, 100 + 1, 100 + 1, 100 + 2, 100 + 2, 10]  # after eos: ignored
    objects = detect.parse(run, ids, info, max_size=64.0)
    assert [o["label"] for o in objects] == ["red square", "blue circle"]
    assert objects[0]["box"] == pytest.approx([0.0, 0.0, 200.0, 100.0])
    x1, y1, x2, y2 = objects[1]["box"]
    assert x1 <= x2 and y1 <= y2
    assert (x1, x2) == pytest.approx((20 / 63 * 64 * 200 / 64, 40 / 63 * 64 * 200 / 64))


def test_boxes_are_always_valid_over_random_sequences():
    detect, run = get_task("detect"), _Runner()
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 40, (1,), generator=g))
        ids = [int(t) for t in torch.randint(0, 164, (n,), generator=g)]
        ids = [t if t >= 100 or t in run.words or t == 2 else 10 for t in ids]
        for o in detect.parse(run, ids, {"w": 50, "h": 80, "size": 64}, max_size=64.0):
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 <= x2 <= 50 and 0 <= y1 <= y2 <= 80 and o["label"]


def test_training_sample_is_the_pretraining_detection_sample_without_its_weight(tmp_path):
    from openofa.data import build_dataset
    from openofa.mini.scenes import write_dataset

    files = write_dataset(tmp_path, n=3, seed=5)
    kw = dict(patch_image_size=64, max_image_size=64, train_augment=False, tokenizer="en")
    task = build_dataset("detect", files["detection"], **kw)
    pretrain = build_dataset("pretrain_detection", files["detection"], **kw)
    for i in range(3):
        a, b = task[i], pretrain[i]
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["target"], b["target"])
        assert "conf" not in a and b["conf"] == 2.0
    # object_order: position lists the objects left to right
    ordered = build_dataset("detect", files["detection"], object_order="position", **kw)
    row = json.loads(files["detection"].read_text().splitlines()[0])
    tgt = ordered[0]["target"].tolist()
    first_bins = [t for t in tgt if t >= len(ordered.builder.tok) - 1000][0::4][: len(row["objects"])]
    assert first_bins == sorted(first_bins)
