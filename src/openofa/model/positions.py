"""Index tables for OFA's relative-position biases.

Text: the relative distance ``i - j`` is bucketed (exact up to ``bucket_size // 2``, log-spaced
beyond, up to ``max_position``) into ``2 * bucket_size - 1`` rows of a per-layer table.
Images: patches sit on a ``image_bucket_size``-wide grid (position id ``r * size + c + 1``); the
offset ``(dr, dc)`` between two patches indexes a ``(2 * size - 1) ** 2 + 3`` row table.

The original precomputes full 1024x1024 and 1765x1765 index buffers; we compute only the rows
that are needed. The arithmetic is elementwise and in the same dtypes, so the buckets are
identical.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def _token_bucket_by_offset(bucket_size: int, max_position: int) -> torch.Tensor:
    """Bucket of every relative offset ``-(max_position-1) .. max_position-1`` (index offset + max_position - 1)."""
    rel = torch.arange(-(max_position - 1), max_position, dtype=torch.long)
    sign = torch.sign(rel)
    mid = bucket_size // 2
    abs_pos = torch.where((rel < mid) & (rel > -mid), mid - 1, torch.abs(rel))
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    log_pos = log_pos.int()
    bucket = torch.where(abs_pos.le(mid), rel, log_pos * sign).long()
    return bucket + bucket_size - 1


def token_rel_bucket(q_pos: torch.Tensor, k_pos: torch.Tensor, bucket_size: int, max_position: int) -> torch.Tensor:
    """Table rows for query positions ``q_pos`` (Q,) against key positions ``k_pos`` (K,) -> (Q, K)."""
    table = _token_bucket_by_offset(bucket_size, max_position).to(q_pos.device)
    return table[q_pos[:, None] - k_pos[None, :] + (max_position - 1)]


def image_position_ids(h: int, w: int, bucket_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Position id ``r * bucket_size + c + 1`` of each patch of an ``h x w`` grid, row-major."""
    r = torch.arange(h, device=device)[:, None]
    c = torch.arange(w, device=device)[None, :]
    return (r * bucket_size + c + 1).reshape(-1)


def image_rel_bucket(h: int, w: int, bucket_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Table rows between all patches of an ``h x w`` grid -> (h*w, h*w), BEiT-style offsets."""
    r = torch.arange(h, device=device).repeat_interleave(w)
    c = torch.arange(w, device=device).repeat(h)
    dr = r[:, None] - r[None, :] + bucket_size - 1
    dc = c[:, None] - c[None, :] + bucket_size - 1
    return dr * (2 * bucket_size - 1) + dc


def image_rel_table_rows(bucket_size: int) -> int:
    return (2 * bucket_size - 1) ** 2 + 3
