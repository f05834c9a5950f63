"""Grounding accuracy (IoU >= 0.5, the original's float32 rule), classification accuracy, MCC."""

from __future__ import annotations

import math

import pytest
import torch

from openofa.errors import OFAError
from openofa.metrics import classification_accuracy, grounding_accuracy, matthews_correlation


def test_grounding_by_hand():
    preds = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 1, 1]]
    refs = [[0, 0, 10, 10],   # IoU 1
            [5, 0, 15, 10],   # 50 / 150
            [0, 0, 10, 20],   # 100 / (200 + 1e-6) = 0.5 in float32: a hit
            [10, 0, 20, 10],  # touching edges: no intersection
            [0, 0, 1, 2]]     # 1 / (2 + 1e-6) < 0.5 in float32: a miss
    assert grounding_accuracy(preds, refs) == pytest.approx(2 / 5)
    assert grounding_accuracy(torch.tensor(preds), torch.tensor(refs)) == pytest.approx(2 / 5)


def test_grounding_errors():
    with pytest.raises(OFAError, match="2 predicted boxes but 1"):
        grounding_accuracy([[0, 0, 1, 1], [0, 0, 1, 1]], [[0, 0, 1, 1]])
    with pytest.raises(OFAError, match="4 values"):
        grounding_accuracy([[0, 0, 1]], [[0, 0, 1, 1]])
    with pytest.raises(OFAError, match="no boxes"):
        grounding_accuracy([], [])


def test_classification_accuracy():
    assert classification_accuracy(["yes", "no", " maybe "], ["yes", "yes", "maybe"]) == pytest.approx(2 / 3)
    with pytest.raises(OFAError, match="2 predictions but 1"):
        classification_accuracy(["a", "b"], ["a"])


def test_matthews_correlation_by_hand():
    # tp 2, fp 1, tn 1, fn 1
    preds = ["yes", "yes", "no", "no", "yes"]
    labels = ["yes", "no", "no", "yes", "yes"]
    assert matthews_correlation(preds, labels) == pytest.approx((2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2))
    assert matthews_correlation(["yes", "yes"], ["yes", "yes"]) == 0.0
