"""Detection scores of the ``detect`` task: precision, recall and F1 at IoU 0.5.

A predicted object matches a reference object of the same image with the same label (compared
after stripping and lower-casing) and IoU of at least ``threshold`` (the grounding rule of
:func:`openofa.vision.boxes.grounding_hits`); predictions are taken in the model's order, each
reference is matched at most once. Generation gives one score per sequence, not per box, so
there is no ranking to compute COCO's average precision from: F1 is the headline.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from openofa.errors import OFAError
from openofa.vision.boxes import grounding_hits

__all__ = ["detection_scores"]


def _objects(items: Any, what: str, i: int) -> list[tuple[list[float], str]]:
    if not isinstance(items, (list, tuple)):
        raise OFAError(f"detection_scores: {what} {i} must be a list of objects, got {type(items).__name__}")
    out = []
    for o in items:
        if not isinstance(o, dict) or "box" not in o or "label" not in o or len(o["box"]) != 4:
            raise OFAError(f"detection_scores: {what} {i}: each object needs a 4-number 'box' and a 'label'")
        out.append(([float(v) for v in o["box"]], str(o["label"]).strip().lower()))
    return out


def detection_scores(predictions: Sequence[Any], references: Sequence[Any], threshold: float = 0.5) -> dict[str, float]:
    """``{"F1@0.5", "precision", "recall", "objects"}`` over every image (micro-averaged):
    ``predictions`` and ``references`` hold one list of ``{"box": [x1, y1, x2, y2], "label": str}``
    per image, in the same order."""
    if len(predictions) != len(references):
        raise OFAError(f"detection_scores: {len(predictions)} predictions but {len(references)} references")
    hits = n_pred = n_ref = 0
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        pred, ref = _objects(pred, "prediction", i), _objects(ref, "reference", i)
        n_pred, n_ref = n_pred + len(pred), n_ref + len(ref)
        free = list(range(len(ref)))
        for box, label in pred:
            cands = [j for j in free if ref[j][1] == label]
            if not cands:
                continue
            p = torch.tensor([box] * len(cands), dtype=torch.float32)
            r = torch.tensor([ref[j][0] for j in cands], dtype=torch.float32)
            ok = grounding_hits(p, r, threshold)
            if bool(ok.any()):
                # the best-overlapping reference among those that hit
                iou = _iou(p, r)
                best = max((k for k in range(len(cands)) if ok[k]), key=lambda k: float(iou[k]))
                free.remove(cands[best])
                hits += 1
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"F1@0.5": f1, "precision": precision, "recall": recall, "objects": n_ref}


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-6)
