"""Bottleneck adapters, as the original's ``--adapter`` places them.

Every encoder and decoder layer gets ``layers.N.adapter`` with ``down_proj`` (dim -> adapter_dim)
and ``up_proj`` (adapter_dim -> dim), both with bias. The adapter sits at the end of the FFN
branch, after ``fc2`` and its dropout and before drop-path and the residual add:
``h = h + scale * up_proj(dropout(relu(down_proj(h))))`` with scale 1.0 (the original's
"learnable_scalar" and "lora" variants are never selected by its scripts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Adapter(nn.Module):
    def __init__(self, dim: int, bottleneck: int, dropout: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.down_proj = nn.Linear(dim, bottleneck)
        self.up_proj = nn.Linear(bottleneck, dim)
        self.dropout = dropout
        self.scale = scale
        with torch.no_grad():  # the original's BERT-style init
            for lin in (self.down_proj, self.up_proj):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        down = F.dropout(F.relu(self.down_proj(h)), p=self.dropout, training=self.training)
        return h + self.up_proj(down) * self.scale


class InterpolatedAdapter(nn.Module):
    """π-Tuning's interpolated adapter: K task experts (adapters of one shape) mixed by
    ``softmax(interpolation_weight)``. The mix is taken in parameter space,
    ``down = sum_k pi_k down_k`` (and the same for ``up``), which equals mixing the experts'
    projections' outputs as the π-Tuning code does, since the mixing weights sum to one and
    each projection is affine."""

    def __init__(self, dim: int, bottleneck: int, experts: int, dropout: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.experts = nn.ModuleList(Adapter(dim, bottleneck, dropout, scale) for _ in range(experts))
        self.interpolation_weight = nn.Parameter(torch.ones(experts))
        self.dropout = dropout
        self.scale = scale

    def mixing(self) -> torch.Tensor:
        return self.interpolation_weight.float().softmax(-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        pi = self.mixing().to(h.dtype)

        def mix(name: str, part: str) -> torch.Tensor:
            return torch.einsum("k,k...->...", pi, torch.stack([getattr(getattr(e, name), part) for e in self.experts]))

        down = F.linear(h, mix("down_proj", "weight"), mix("down_proj", "bias"))
        down = F.dropout(F.relu(down), p=self.dropout, training=self.training)
        return h + F.linear(down, mix("up_proj", "weight"), mix("up_proj", "bias")) * self.scale
