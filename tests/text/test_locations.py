"""Location tokens against the 10 worked examples of tokenizer.json and the refcoco samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openofa.errors import OFAError
from openofa.text import (
    OFATokenizer,
    bins_to_box,
    bins_to_ids,
    bins_to_tokens,
    box_to_ids,
    box_to_tokens,
    ids_to_bins,
    ids_to_box,
    quantize_box,
    scale_box,
    tokens_to_bins,
)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
LOC = json.loads((GOLDEN / "tokenizer.json").read_text(encoding="utf-8"))["location"]
EXAMPLES = LOC["examples"]


def test_fixture_settings():
    assert len(EXAMPLES) == 10
    assert LOC["num_bins"] == 1000 and LOC["max_image_size"] == 512


@pytest.mark.parametrize("ex", EXAMPLES, ids=[f"{e['w']}x{e['h']}:{e['box_xyxy']}" for e in EXAMPLES])
def test_location_example(ex):
    w, h = ex["w"], ex["h"]
    rw, rh = 512 / w, 512 / h
    assert rw == pytest.approx(ex["w_resize_ratio"], abs=0) and rh == pytest.approx(ex["h_resize_ratio"], abs=0)
    box = scale_box(ex["box_xyxy"], rw, rh)
    normalized = (torch.tensor(box, dtype=torch.float32) / 512).tolist()
    assert normalized == ex["normalized_box"]  # bit-exact float32
    assert quantize_box(box) == ex["bins"]
    assert box_to_tokens(box) == ex["tokens"]
    assert box_to_ids(box) == ex["token_ids"]
    assert bins_to_tokens(ex["bins"]) == ex["tokens"]
    assert tokens_to_bins(" ".join(ex["tokens"])) == ex["bins"]
    assert ids_to_bins(ex["token_ids"]) == ex["bins"]
    decoded = ids_to_box(ex["token_ids"], w_resize_ratio=rw, h_resize_ratio=rh)
    assert decoded == ex["decoded_box_xyxy"]  # float32 arithmetic, bit-exact


def test_location_tokens_via_encode_no_bpe():
    en = OFATokenizer.from_language("en")
    for ex in EXAMPLES:
        assert en.encode_no_bpe(" ".join(ex["tokens"])) == ex["token_ids"]
        assert en.decode(ex["token_ids"]) == "".join(ex["tokens"])


def test_batched_tensors_match_single():
    ids = torch.tensor([e["token_ids"] for e in EXAMPLES])
    rw = torch.tensor([512 / e["w"] for e in EXAMPLES], dtype=torch.float32)
    rh = torch.tensor([512 / e["h"] for e in EXAMPLES], dtype=torch.float32)
    boxes = ids_to_box(ids, w_resize_ratio=rw, h_resize_ratio=rh)
    assert isinstance(boxes, torch.Tensor) and boxes.shape == (10, 4) and boxes.dtype == torch.float32
    assert boxes.tolist() == [e["decoded_box_xyxy"] for e in EXAMPLES]
    bins = quantize_box(torch.tensor([[10.0, 20.0, 300.5, 400.25]]) * torch.tensor([0.8, 512 / 480, 0.8, 512 / 480]))
    assert bins.tolist() == [EXAMPLES[0]["bins"]]


def test_round_half_to_even():
    # In float32 these boxes land exactly on .5: 312.5, 499.5, 686.5, 873.5 (x999/512).
    box = [160.16015625, 256.0, 351.83984375, 447.6796875]
    assert ((torch.tensor(box) / 512) * 999).tolist() == [312.5, 499.5, 686.5, 873.5]
    assert quantize_box(box) == [312, 500, 686, 874]  # ties to even, not up


def test_chinese_vocab_size_offsets():
    assert box_to_ids([0, 0, 512, 512], vocab_size=30325) == [29325, 29325, 30324, 30324]
    assert ids_to_bins([29325, 30324], vocab_size=30325) == [0, 999]
    assert bins_to_ids([0, 1, 998, 999], vocab_size=30325) == [29325, 29326, 30323, 30324]


def test_refcoco_targets_of_preprocess_json():
    meta = json.loads((GOLDEN / "preprocess.json").read_text())
    for name, info in meta["images"].items():
        r = meta["refcoco"][name]
        w, h = info["size_wh"]
        box = scale_box([float(v) for v in r["box"].split(",")], 512 / w, 512 / h)
        assert box_to_ids(box) + [2] == r["target_ids"], name
        assert [0] + box_to_ids(box) == r["prev_output_ids"], name


def test_bins_to_box_identity_at_full_size():
    assert bins_to_box([0, 0, 999, 999]) == [0.0, 0.0, 512.0, 512.0]


def test_errors():
    with pytest.raises(OFAError, match="outside 0..512"):
        quantize_box([0, 0, 600, 10])
    with pytest.raises(OFAError, match="outside 0..512"):
        quantize_box([-5, 0, 10, 10])
    with pytest.raises(OFAError, match="4 values"):
        quantize_box([1, 2, 3])
    with pytest.raises(OFAError, match="not all location tokens"):
        ids_to_box([58457, 58457, 100, 59456])
    with pytest.raises(OFAError, match="not a location token"):
        tokens_to_bins("<bin_1> <bin_x>")
    with pytest.raises(OFAError, match="positive"):
        bins_to_box([1, 2, 3, 4], w_resize_ratio=0.0)
    with pytest.raises(OFAError, match="0..999"):
        bins_to_ids([1000])


def test_types_preserved():
    assert isinstance(quantize_box((1.0, 2.0, 3.0, 4.0)), list)
    assert isinstance(ids_to_box(np.array([58457, 58457, 58458, 58458]).tolist()), list)
