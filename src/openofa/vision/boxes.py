"""Bounding boxes ``(x1, y1, x2, y2)`` in image pixels: parsing, validation, IoU, clamping.

The refcoco TSV column is ``"x1,y1,x2,y2"`` (what ``RefcocoDataset`` splits on ``,``).
:func:`grounding_hits` is the original's accuracy rule (``RefcocoTask._calculate_ap_score``):
a prediction counts when IoU >= 0.5 *and* the intersection has positive width and height,
with IoU = inter / (area_pred + area_ref - inter + 1e-6), in float32.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

from openofa.errors import OFAError

__all__ = ["parse_box", "validate_box", "box_iou", "grounding_hits", "clamp_box", "format_box"]

BoxLike = Union[Sequence[float], torch.Tensor]


def parse_box(text: str, *, name: str | None = None) -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` -> four floats (spaces around numbers allowed). ``name`` (e.g.
    ``"refcoco_val.tsv line 3"``) is put in the error message."""
    where = f"{name}: " if name else ""
    if not isinstance(text, str):
        raise OFAError(f"{where}box must be a string 'x1,y1,x2,y2', got {type(text).__name__}")
    parts = text.strip().split(",")
    if len(parts) != 4:
        raise OFAError(f"{where}box {text!r} must have 4 comma-separated numbers 'x1,y1,x2,y2'")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise OFAError(f"{where}box {text!r} contains a value that is not a number") from None
    if not all(math.isfinite(v) for v in vals):
        raise OFAError(f"{where}box {text!r} contains a non-finite value")
    return vals  # type: ignore[return-value]


def format_box(box: BoxLike) -> str:
    """``"x1,y1,x2,y2"`` with Python's shortest float repr (inverse of :func:`parse_box`)."""
    vals = box.tolist() if isinstance(box, torch.Tensor) else list(box)
    return ",".join(repr(float(v)) for v in vals)


def _four(box: BoxLike, what: str = "box") -> list[float]:
    vals = box.tolist() if isinstance(box, torch.Tensor) else list(box)
    if len(vals) != 4:
        raise OFAError(f"{what} must have 4 values (x1, y1, x2, y2), got {vals!r}")
    try:
        return [float(v) for v in vals]
    except (TypeError, ValueError):
        raise OFAError(f"{what} {vals!r} contains a value that is not a number") from None


def validate_box(box: BoxLike, width: int, height: int, *, name: str | None = None) -> tuple[float, float, float, float]:
    """Check ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``; return the box.

    The original never checks; a box outside the image quantises to bins outside
    ``0..999`` (no such token), and an inverted one trains on garbage, so both are errors here.
    """
    where = f"{name}: " if name else ""
    x1, y1, x2, y2 = _four(box)
    shown = f"({_num(x1)}, {_num(y1)}, {_num(x2)}, {_num(y2)})"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise OFAError(f"{where}box {shown} contains a non-finite value")
    if not x1 < x2:
        raise OFAError(f"{where}box {shown} is empty or inverted: x1 must be < x2")
    if not y1 < y2:
        raise OFAError(f"{where}box {shown} is empty or inverted: y1 must be < y2")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise OFAError(f"{where}box {shown} is outside the image of size {width}x{height} (width x height)")
    return (x1, y1, x2, y2)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _as_boxes(b: BoxLike, what: str) -> torch.Tensor:
    t = b.to(torch.float32) if isinstance(b, torch.Tensor) else torch.tensor(_four(b, what), dtype=torch.float32)
    if t.dim() == 0 or t.shape[-1] != 4:
        raise OFAError(f"{what} must have a last dimension of 4, got shape {tuple(t.shape)}")
    return t


def _iou_parts(pred: torch.Tensor, ref: torch.Tensor):
    # Same formula and float32 ops as the original's _calculate_ap_score.
    lt = torch.maximum(pred[..., :2], ref[..., :2])
    rb = torch.minimum(pred[..., 2:], ref[..., 2:])
    iw = rb[..., 0] - lt[..., 0]
    ih = rb[..., 1] - lt[..., 1]
    inter = iw * ih
    area_p = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_r = (ref[..., 2] - ref[..., 0]) * (ref[..., 3] - ref[..., 1])
    return inter, area_p + area_r - inter, iw, ih


def box_iou(pred: BoxLike, ref: BoxLike):
    """Intersection over union of boxes (pairwise along leading dims; float32).

    0 when the boxes do not overlap. One box each -> a Python float; tensors of shape
    ``(..., 4)`` -> a tensor of shape ``(...)``.
    """
    p, r = _as_boxes(pred, "predicted box"), _as_boxes(ref, "reference box")
    inter, union, iw, ih = _iou_parts(p, r)
    overlap = (iw > 0) & (ih > 0)
    iou = torch.where(overlap & (union > 0), inter / torch.where(union > 0, union, torch.ones_like(union)),
                      torch.zeros_like(inter))
    if isinstance(pred, torch.Tensor) or isinstance(ref, torch.Tensor):
        return iou
    return float(iou)


def grounding_hits(pred: BoxLike, ref: BoxLike, threshold: float = 0.5):
    """The original grounding accuracy per sample: 1.0 where
    ``inter / (area_p + area_r - inter + 1e-6) >= threshold`` and the intersection has
    positive width and height, else 0.0. Mean it for the ``score`` the original reports."""
    p, r = _as_boxes(pred, "predicted box"), _as_boxes(ref, "reference box")
    inter, union, iw, ih = _iou_parts(p, r)
    ious = inter / (union + 1e-6)
    hits = ((ious >= threshold) & (iw > 0) & (ih > 0)).float()
    if isinstance(pred, torch.Tensor) or isinstance(ref, torch.Tensor):
        return hits
    return float(hits)


def clamp_box(box: BoxLike, width: float, height: float):
    """Clamp x to ``[0, width]`` and y to ``[0, height]`` (a predicted box can fall slightly
    outside after the inverse resize). Does not reorder an inverted box. Lists/tuples come
    back as a list, tensors as a tensor of the same shape."""
    if isinstance(box, torch.Tensor):
        t = box.clone()
        if t.dim() == 0 or t.shape[-1] != 4:
            raise OFAError(f"box must have a last dimension of 4, got shape {tuple(t.shape)}")
        t[..., 0::2] = t[..., 0::2].clamp(0, width)
        t[..., 1::2] = t[..., 1::2].clamp(0, height)
        return t
    x1, y1, x2, y2 = _four(box)
    cx = lambda v: min(max(v, 0.0), float(width))  # noqa: E731
    cy = lambda v: min(max(v, 0.0), float(height))  # noqa: E731
    return [cx(x1), cy(y1), cx(x2), cy(y2)]
