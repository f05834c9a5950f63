"""VQA accuracy (official vqaEval.py rules) and OFA's ref_dict validation score, by hand."""

from __future__ import annotations

import pytest

from openofa.errors import OFAError
from openofa.metrics import normalize_answer, vqa_accuracy, vqa_ref_score, vqa_score
from openofa.metrics.vqa import parse_ref_dict


@pytest.mark.parametrize("text, norm", [
    ("Two", "2"),
    ("none", "0"),
    ("A dog.", "dog"),
    ("the red/white one", "red white 1"),
    ("red / white", "red white"),
    ("1,000", "1000"),
    ("3.5", "3.5"),
    ("dont", "don't"),
    ("Im", "im"),  # the official table's capitalised keys never match
    ("  yes\n", "yes"),
])
def test_normalize_answer(text, norm):
    assert normalize_answer(text) == norm


@pytest.mark.parametrize("pred, answers, acc", [
    ("2", ["2"] * 10, 1.0),
    ("two", ["2"] * 10, 1.0),
    ("yes", ["yes"] * 3 + ["no"] * 7, (3 * 2 / 3 + 7 * 1) / 10),  # 0.9
    ("yes", ["yes"] * 2 + ["no"] * 8, (2 * 1 / 3 + 8 * 2 / 3) / 10),  # 0.6
    ("yes", ["yes"] + ["no"] * 9, (1 * 0 + 9 * 1 / 3) / 10),  # 0.3
    ("maybe", ["yes"] * 5 + ["no"] * 5, 0.0),
    ("A dog.", ["dog"] * 5 + ["dogs"] * 5, 1.0),
    ("yes!", ["yes!"] * 10, 0.0),  # all annotators agree: their answers are not normalized
])
def test_vqa_score_by_hand(pred, answers, acc):
    assert vqa_score(pred, answers) == pytest.approx(acc)


def test_vqa_accuracy_mean_and_dicts():
    answers = [["yes"] * 10, ["yes"] * 2 + ["no"] * 8]
    assert vqa_accuracy(["yes", "yes"], answers) == pytest.approx((1.0 + 0.6) / 2)
    assert vqa_accuracy({7: "yes", 9: "no"}, {9: answers[1], 7: answers[0]}) == pytest.approx((1.0 + 1.0) / 2)


def test_ref_dict_score():
    t = "1.0|!+no&&0.3|!+yes"
    assert parse_ref_dict(t) == {"no": 1.0, "yes": 0.3}
    assert vqa_ref_score(["yes", " no", "maybe"], [t, t, {"maybe": 0.6}]) == pytest.approx((0.3 + 1.0 + 0.6) / 3)


@pytest.mark.parametrize("call, match", [
    (lambda: vqa_accuracy(["a"], [["a"], ["b"]]), "1 predictions but 2"),
    (lambda: vqa_accuracy({1: "a"}, {2: ["a"]}), "no reference"),
    (lambda: vqa_accuracy(["a"], {1: ["a"]}), "both as lists or both as dicts"),
    (lambda: vqa_score("a", []), "non-empty"),
    (lambda: vqa_ref_score(["a"], ["0.5 no"]), "confidence\\|!\\+answer"),
    (lambda: vqa_accuracy([], []), "no predictions"),
])
def test_errors(call, match):
    with pytest.raises(OFAError, match=match):
        call()
