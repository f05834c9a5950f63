"""Multi-head attention with an additive bias, as OFA uses it.

Differences from a stock attention layer, all from the original:
* queries are scaled by ``(head_dim * attn_scale_factor) ** -0.5`` (factor 2 in every size);
* every call receives an additive float bias (absolute + relative position bias, causal and
  padding masks folded in as ``-inf``);
* ``scale_heads``: a learned per-head multiplier ``c_attn`` on each head's output before ``out_proj``.

The arithmetic runs through ``F.scaled_dot_product_attention`` (fused kernels on CPU and GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from openofa.model.linear import Linear


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, scale_factor: float = 2.0, scale_heads: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scaling = (self.head_dim * scale_factor) ** -0.5
        self.dropout = dropout
        self.k_proj = Linear(dim, dim)
        self.v_proj = Linear(dim, dim)
        self.q_proj = Linear(dim, dim)
        self.out_proj = Linear(dim, dim)
        self.c_attn = nn.Parameter(torch.ones(heads)) if scale_heads else None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, H, T, head_dim)."""
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        return self.split_heads(self.q_proj(x))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Heads-first q (B, H, T, d), k/v (B, H, S, d), bias broadcastable to (B, H, T, S) -> (B, H, T, d)."""
        if bias is not None and bias.dtype != q.dtype:
            bias = bias.to(q.dtype)
        p = self.dropout if self.training else 0.0
        return self._scale_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p,
                                                                scale=self.scaling))

    def attend_with_weights(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`attend` computed explicitly, also returning the attention probabilities
        (B, H, T, S) in float32 (the softmax runs in float32 whatever the inputs' dtype)."""
        scores = (q.float() @ k.float().transpose(-1, -2)) * self.scaling
        if bias is not None:
            scores = scores + bias.float()
        probs = scores.softmax(-1)
        p = self.dropout if self.training else 0.0
        out = F.dropout(probs, p=p, training=self.training).to(v.dtype) @ v
        return self._scale_heads(out), probs

    def _scale_heads(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.c_attn is None else out * self.c_attn.to(out.dtype)[:, None, None]

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, T, d) -> out_proj of (B, T, C)."""
        b, h, t, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * d))

    def forward(self, x: torch.Tensor, kv_input: torch.Tensor | None = None,
                bias: torch.Tensor | None = None,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Batch-first attention of ``x`` (B, T, C) over ``kv_input`` (B, S, C), self-attention when
        None. ``prefix``: keys and values (B, H, L, d) put in front of the projected ones (prefix
        tuning), with a zero bias."""
        k, v = self.project_kv(x if kv_input is None else kv_input)
        if prefix is not None:
            k, v, bias = with_prefix(k, v, bias, prefix)
        return self.merge(self.attend(self.project_q(x), k, v, bias))


def with_prefix(k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                prefix: tuple[torch.Tensor, torch.Tensor]):
    """Keys/values (B, H, S, d) with ``prefix`` (B, H, L, d) in front; ``bias`` (..., S) gets L
    zero columns in front (prefix columns carry no position bias and no mask)."""
    pk, pv = prefix
    k = torch.cat([pk.to(k.dtype), k], dim=2)
    v = torch.cat([pv.to(v.dtype), v], dim=2)
    if bias is not None:
        bias = F.pad(bias, (pk.shape[2], 0))
    return k, v, bias
