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
