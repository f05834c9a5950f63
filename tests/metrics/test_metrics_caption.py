"""Caption metrics against the reference COCO caption evaluation (pycocoevalcap 1.2 with Java)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openofa.errors import OFAError
from openofa.metrics import caption_scores
from openofa.metrics.caption import rouge_l, tokenize_for_coco

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "metrics" / "coco_caption.json"
KEYS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L"]


@pytest.fixture(scope="module")
def coco():
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    preds = {int(k): v for k, v in data["predictions"].items()}
    refs = {int(k): v for k, v in data["references"].items()}
    return data, preds, refs


def test_tokenization_equals_coco_caption(coco):
    data, preds, refs = coco
    ids, tok_refs, tok_preds = tokenize_for_coco(preds, refs)
    for k, r, p in zip(ids, tok_refs, tok_preds):
        assert r == data["tokenized"][str(k)]["references"]
        assert p == data["tokenized"][str(k)]["prediction"]


def test_corpus_scores_equal_coco_caption(coco):
    data, preds, refs = coco
    scores = caption_scores(preds, refs)
    assert set(scores) == set(KEYS)
    for k in KEYS:
        assert scores[k] == pytest.approx(data["expected"][k], abs=1e-6), k


def test_per_image_scores_equal_coco_caption(coco):
    data, preds, refs = coco
    per_image = caption_scores(preds, refs, per_image=True)["per_image"]
    assert list(per_image) == list(preds)
    for k, row in per_image.items():
        for key in KEYS:
            assert row[key] == pytest.approx(data["expected_per_image"][str(k)][key], abs=1e-6), (k, key)


def test_rouge_l_by_hand():
    # LCS 3 of 3 candidate words and 4 reference words: P = 1, R = 0.75, beta = 1.2
    score, _ = rouge_l([["a dog runs fast", "a cat"]], ["a dog runs"])
    assert score == pytest.approx((1 + 1.44) * 1 * 0.75 / (0.75 + 1.44 * 1))


def test_exact_copy_scores():
    refs = {1: ["a dog on the grass", "a brown dog lying in a field"], 2: ["a red bus in the street", "a bus"]}
    scores = caption_scores({1: "A dog on the grass.", 2: "a red bus in the street"}, refs)
    assert scores["BLEU-1"] == pytest.approx(1.0)
    assert scores["BLEU-4"] == pytest.approx(1.0)
    assert scores["ROUGE-L"] == pytest.approx(1.0)


@pytest.mark.parametrize("preds, refs, match", [
    ({1: "a"}, {2: ["a"]}, "have no references"),
    ({1: "a"}, {1: ["a"], 2: ["b"]}, "have no prediction"),
    ({1: "a"}, {1: []}, "non-empty list"),
    ({1: "a"}, {1: "a dog"}, "non-empty list"),
    ({1: 3}, {1: ["a"]}, "must be a string"),
    ({}, {}, "no predictions"),
    (["a"], [["a"]], "dicts keyed by image id"),
])
def test_errors(preds, refs, match):
    with pytest.raises(OFAError, match=match):
        caption_scores(preds, refs)
