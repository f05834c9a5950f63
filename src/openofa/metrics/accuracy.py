"""Accuracies: grounding (IoU >= 0.5, the original's rule), classification (exact match), and
the Matthews correlation OFA reports for CoLA."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from openofa.errors import OFAError
from openofa.vision.boxes import grounding_hits

__all__ = ["grounding_accuracy", "classification_accuracy", "matthews_correlation"]


def grounding_accuracy(pred_boxes, ref_boxes, threshold: float = 0.5) -> float:
    """Fraction of predicted boxes ``(x1, y1, x2, y2)`` that hit their reference box, with the
    original's rule (:func:`openofa.vision.boxes.grounding_hits`: IoU >= ``threshold`` in float32
    with ``1e-6`` added to the union, and an intersection of positive width and height).
    Boxes are lists of four numbers or tensors of shape ``(N, 4)``."""
    preds = pred_boxes if isinstance(pred_boxes, torch.Tensor) else torch.tensor(_boxes(pred_boxes, "predicted"))
    refs = ref_boxes if isinstance(ref_boxes, torch.Tensor) else torch.tensor(_boxes(ref_boxes, "reference"))
    preds, refs = preds.to(torch.float32).reshape(-1, 4), refs.to(torch.float32).reshape(-1, 4)
    if len(preds) != len(refs):
        raise OFAError(f"grounding_accuracy: {len(preds)} predicted boxes but {len(refs)} reference boxes")
    if len(preds) == 0:
        raise OFAError("grounding_accuracy: no boxes")
    return float(grounding_hits(preds, refs, threshold).mean())


def _boxes(boxes, what: str) -> list[list[float]]:
    out = []
    for i, b in enumerate(boxes):
        vals = b.tolist() if isinstance(b, torch.Tensor) else list(b)
        if len(vals) != 4:
            raise OFAError(f"grounding_accuracy: {what} box {i} must have 4 values (x1, y1, x2, y2), got {vals!r}")
        try:
            out.append([float(v) for v in vals])
        except (TypeError, ValueError):
            raise OFAError(f"grounding_accuracy: {what} box {i} {vals!r} has a value that is not a number") from None
    return out


def classification_accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction of predictions equal to their label (after ``strip()``): the original's score for
    SNLI-VE, GLUE and ImageNet (``ref_dict = {label: 1.0}``)."""
    if isinstance(predictions, str) or isinstance(labels, str):
        raise OFAError("classification_accuracy: give lists of predictions and labels")
    if len(predictions) != len(labels):
        raise OFAError(f"classification_accuracy: {len(predictions)} predictions but {len(labels)} labels")
    if not predictions:
        raise OFAError("classification_accuracy: no predictions")
    return sum(str(p).strip() == str(t).strip() for p, t in zip(predictions, labels)) / len(predictions)


def matthews_correlation(predictions: Sequence[str], labels: Sequence[str], positive: str = "yes",
                         negative: str = "no") -> float:
    """Matthews correlation of yes/no predictions (OFA's CoLA score, counted as its ``cola`` task
    does: a prediction that is neither word counts nowhere). 0.0 when a margin is empty (the
    original divides by zero there)."""
    if len(predictions) != len(labels):
        raise OFAError(f"matthews_correlation: {len(predictions)} predictions but {len(labels)} labels")
    tp = fp = tn = fn = 0
    for p, t in zip(predictions, labels):
        p, t = str(p).strip(), str(t).strip()
        if p == positive:
            tp, fp = tp + (t == positive), fp + (t != positive)
        elif p == negative:
            tn, fn = tn + (t == negative), fn + (t != negative)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0
