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


# ---- image codes as decoder targets ----------------------------------------------------------------
# Beyond the code grid (bos + grid) every position gets this image position id, as in the original
# (a fixed tail: only padding of a code row sits there, since a code target is exactly one grid).
CODE_TAIL_POSITION = 1024


def code_position_ids(positions: torch.Tensor, code_image_size: int, bucket_size: int) -> torch.Tensor:
    """Image position ids of decoder positions ``positions`` (T,) when the target is image codes.

    Position 0 (bos) gets id 0; positions 1..w*w walk the ``w x w`` code grid (``w =
    code_image_size // 8``) row-major on the ``bucket_size``-wide table (id ``r * bucket_size + c
    + 1``); later positions get :data:`CODE_TAIL_POSITION` (or the table's last id when the table
    is smaller than that)."""
    w = code_image_size // 8
    k = positions - 1
    grid = torch.div(k, w, rounding_mode="floor") * bucket_size + k.remainder(w) + 1
    tail = min(CODE_TAIL_POSITION, bucket_size * bucket_size)
    ids = torch.where(positions > w * w, torch.full_like(positions, tail), grid)
    return torch.where(positions == 0, torch.zeros_like(positions), ids)


def image_rel_bucket_of_ids(q_ids: torch.Tensor, k_ids: torch.Tensor, bucket_size: int) -> torch.Tensor:
    """Image relative-position table rows between image position ids ``q_ids`` (Q,) and ``k_ids``
    (K,) -> (Q, K). Id ``p >= 1`` is the cell ``divmod(p - 1, bucket_size)``; id 0 (no cell) uses
    the table's three extra rows: query 0 -> ``rows - 3``, key 0 -> ``rows - 2``, both -> ``rows - 1``."""
    rows = image_rel_table_rows(bucket_size)
    qr, qc = torch.div(q_ids - 1, bucket_size, rounding_mode="floor"), (q_ids - 1).remainder(bucket_size)
    kr, kc = torch.div(k_ids - 1, bucket_size, rounding_mode="floor"), (k_ids - 1).remainder(bucket_size)
    dr = qr[:, None] - kr[None, :] + bucket_size - 1
    dc = qc[:, None] - kc[None, :] + bucket_size - 1
    out = dr * (2 * bucket_size - 1) + dc
    q0, k0 = (q_ids == 0)[:, None], (k_ids == 0)[None, :]
    out = torch.where(q0, rows - 3, out)
    out = torch.where(k0, rows - 2, out)
    return torch.where(q0 & k0, rows - 1, out)
