"""Boxes <-> location tokens ``<bin_k>``, with the original's arithmetic.

Forward (``RefcocoDataset`` + ``utils/transforms.py``): the box, already scaled into the
resized image, is divided by ``max_image_size`` (512; *not* by the resized width/height),
then ``k = round(v * (num_bins - 1))`` with round-half-to-even. The original does this on
float32 tensors, and a float64 computation can land on the other side of a ``.5`` tie, so
everything here is computed in float32 with torch, in the same order.

Inverse (``RefcocoTask.valid_step``): ``k = id - len(dict) + num_bins``,
``v = k / (num_bins - 1) * max_image_size``, then x / ``w_resize_ratio`` and
y / ``h_resize_ratio`` (ratio = resized size / original size), also in float32.

Functions take a 4-sequence or a tensor whose last dimension is 4 (a batch); lists come back
as lists, tensors as tensors.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from openofa.errors import OFAError

__all__ = [
    "NUM_BINS",
    "MAX_IMAGE_SIZE",
    "scale_box",
    "quantize_box",
    "bins_to_tokens",
    "box_to_tokens",
    "box_to_ids",
    "bins_to_ids",
    "ids_to_bins",
    "tokens_to_bins",
    "bins_to_box",
    "ids_to_box",
]

NUM_BINS = 1000
MAX_IMAGE_SIZE = 512
EN_VOCAB_SIZE = 59457

BoxLike = Union[Sequence[float], torch.Tensor]
Ratio = Union[float, torch.Tensor]


def _as_tensor(values, dtype: torch.dtype, what: str) -> tuple[torch.Tensor, bool]:
    """(tensor with last dim 4, whether the input was a tensor)."""
    is_tensor = isinstance(values, torch.Tensor)
    try:
        t = values.to(dtype) if is_tensor else torch.tensor(list(values), dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise OFAError(f"{what} must be 4 numbers, got {values!r:.80}") from None
    if t.dim() == 0 or t.shape[-1] != 4:
        raise OFAError(f"{what} must have 4 values (x1, y1, x2, y2), got shape {tuple(t.shape)}")
    return t, is_tensor


def _out(t: torch.Tensor, is_tensor: bool):
    return t if is_tensor else t.tolist()


def _ratio(r: Ratio, like: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(r, dtype=torch.float32)
    if r.dim() > 0:  # one ratio per box in a batch
        r = r.unsqueeze(-1)
    if bool((r <= 0).any()) or not bool(torch.isfinite(r).all()):
        raise OFAError(f"resize ratios must be positive and finite, got {r.flatten().tolist()}")
    return r


def scale_box(box: BoxLike, w_ratio: Ratio, h_ratio: Ratio):
    """Scale an original-image box into the resized image, like ``utils/transforms.resize``:
    ``box * float32([w_ratio, h_ratio, w_ratio, h_ratio])``."""
    t, is_tensor = _as_tensor(box, torch.float32, "box")
    wr, hr = torch.as_tensor(w_ratio, dtype=torch.float32), torch.as_tensor(h_ratio, dtype=torch.float32)
    if wr.dim() > 0 or hr.dim() > 0:
        wr, hr = torch.broadcast_tensors(wr, hr)
        scale = torch.stack([wr, hr, wr, hr], dim=-1)
    else:
        scale = torch.stack([wr, hr, wr, hr])
    return _out(t * scale, is_tensor)


def quantize_box(box: BoxLike, *, num_bins: int = NUM_BINS, max_image_size: int = MAX_IMAGE_SIZE):
    """Bins ``[k_x1, k_y1, k_x2, k_y2]`` of a box given in the *resized* image's pixels.

    ``k = round(box / max_image_size * (num_bins - 1))`` in float32, half-to-even. A box
    outside ``0 .. max_image_size`` gives bins outside ``0 .. num_bins-1``, which raises.
    """
    t, is_tensor = _as_tensor(box, torch.float32, "box")
    k = ((t / max_image_size) * (num_bins - 1)).round().long()
    if bool((k < 0).any()) or bool((k >= num_bins).any()):
        raise OFAError(
            f"box {t.tolist()} is outside 0..{max_image_size} (the resized image), "
            f"bins {k.tolist()} not in 0..{num_bins - 1}"
        )
    return _out(k, is_tensor)


def bins_to_tokens(bins: Sequence[int]) -> list[str]:
    """``["<bin_k>", ...]`` (the refcoco target is these joined by single spaces)."""
    return [f"<bin_{int(k)}>" for k in bins]


def box_to_tokens(box: BoxLike, *, num_bins: int = NUM_BINS, max_image_size: int = MAX_IMAGE_SIZE) -> list[str]:
    """Location tokens of one box in resized-image pixels."""
    bins = quantize_box(box, num_bins=num_bins, max_image_size=max_image_size)
    if isinstance(bins, torch.Tensor):
        bins = bins.tolist()
    if bins and isinstance(bins[0], list):
        raise OFAError("box_to_tokens takes one box, not a batch")
    return bins_to_tokens(bins)


def bins_to_ids(bins, *, vocab_size: int = EN_VOCAB_SIZE, num_bins: int = NUM_BINS):
    """Ids of bins: ``vocab_size - num_bins + k`` (58457 + k in English, 29325 + k in Chinese)."""
    is_tensor = isinstance(bins, torch.Tensor)
    t = bins.long() if is_tensor else torch.tensor(list(bins), dtype=torch.long)
    if bool((t < 0).any()) or bool((t >= num_bins).any()):
        raise OFAError(f"location bins {t.tolist()} are outside 0..{num_bins - 1}")
    return _out(t + (vocab_size - num_bins), is_tensor)


def box_to_ids(
    box: BoxLike,
    *,
    vocab_size: int = EN_VOCAB_SIZE,
    num_bins: int = NUM_BINS,
    max_image_size: int = MAX_IMAGE_SIZE,
):
    """Location token ids of a box in resized-image pixels (the refcoco target without eos)."""
    bins = quantize_box(box, num_bins=num_bins, max_image_size=max_image_size)
    return bins_to_ids(bins, vocab_size=vocab_size, num_bins=num_bins)


def ids_to_bins(ids, *, vocab_size: int = EN_VOCAB_SIZE, num_bins: int = NUM_BINS):
    """``id - vocab_size + num_bins``; an id that is not a location token raises."""
    is_tensor = isinstance(ids, torch.Tensor)
    try:
        t = ids.long() if is_tensor else torch.tensor(list(ids), dtype=torch.long)
    except (TypeError, ValueError, RuntimeError):
        raise OFAError(f"location ids must be integers, got {ids!r:.80}") from None
    k = t - (vocab_size - num_bins)
    if bool((k < 0).any()) or bool((k >= num_bins).any()):
        raise OFAError(
            f"token ids {t.tolist()} are not all location tokens "
            f"(<bin_0>..<bin_{num_bins - 1}> = {vocab_size - num_bins}..{vocab_size - 1})"
        )
    return _out(k, is_tensor)


def tokens_to_bins(tokens: Sequence[str] | str) -> list[int]:
    """Parse ``"<bin_12> <bin_400> ..."`` (or a list of such tokens) into bin numbers."""
    if isinstance(tokens, str):
        tokens = tokens.split()
    bins = []
    for tok in tokens:
        if not (tok.startswith("<bin_") and tok.endswith(">") and tok[5:-1].isdigit()):
            raise OFAError(f"not a location token: {tok!r}")
        bins.append(int(tok[5:-1]))
    return bins


def bins_to_box(
    bins,
    *,
    w_resize_ratio: Ratio = 1.0,
    h_resize_ratio: Ratio = 1.0,
    num_bins: int = NUM_BINS,
    max_image_size: int = MAX_IMAGE_SIZE,
):
    """Box in original-image pixels of 4 bins (or a batch ``(..., 4)``), the evaluation-side
    inverse: ``k / (num_bins-1) * max_image_size``, x divided by ``w_resize_ratio``, y by
    ``h_resize_ratio``, in float32. Ratios may be tensors with one value per box."""
    is_tensor = isinstance(bins, torch.Tensor)
    t, _ = _as_tensor(bins.long() if is_tensor else [int(b) for b in bins], torch.long, "bins")
    # The original divides an int64 tensor (-> float32) by num_bins - 1, then multiplies.
    v = t.to(torch.float32) / (num_bins - 1) * max_image_size
    v[..., 0::2] /= _ratio(w_resize_ratio, v)
    v[..., 1::2] /= _ratio(h_resize_ratio, v)
    return _out(v, is_tensor)


def ids_to_box(
    ids,
    *,
    w_resize_ratio: Ratio = 1.0,
    h_resize_ratio: Ratio = 1.0,
    vocab_size: int = EN_VOCAB_SIZE,
    num_bins: int = NUM_BINS,
    max_image_size: int = MAX_IMAGE_SIZE,
):
    """Box in original-image pixels of 4 location token ids (generation output, eos removed)."""
    bins = ids_to_bins(ids, vocab_size=vocab_size, num_bins=num_bins)
    return bins_to_box(
        bins,
        w_resize_ratio=w_resize_ratio,
        h_resize_ratio=h_resize_ratio,
        num_bins=num_bins,
        max_image_size=max_image_size,
    )
