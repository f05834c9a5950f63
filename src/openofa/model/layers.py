"""Pre-LayerNorm encoder and decoder blocks with the Normformer-style extras of OFA.

``scale_attn`` adds a LayerNorm on each attention output (after ``out_proj``), ``scale_fc`` a
LayerNorm on the FFN hidden activation (after GELU, before ``fc2``), ``scale_resids`` a learned
multiplier on the FFN residual. Module names match the original's state-dict keys.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from openofa.config import OFAConfig
from openofa.model.adapter import Adapter, InterpolatedAdapter
from openofa.model.attention import Attention, with_prefix
from openofa.model.droppath import DropPath
from openofa.model.linear import Linear


class KVStore(Protocol):
    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys/values (N, H, 1, d); return all of them so far."""


def _gelu(x: torch.Tensor) -> torch.Tensor:
    # exact (erf) GELU computed in float32, as the original does for half precision too. PyTorch's
    # bf16 GELU already computes in float32 and rounds once: the same values for every normal bf16
    # input (tests/model/test_layers.py), ~10x faster on CPU than the two casts around it.
    # Its fp16 GELU differs from the cast by an ulp on some inputs, so fp16 keeps the casts.
    if x.dtype == torch.bfloat16:
        return F.gelu(x)
    return F.gelu(x.float()).type_as(x)


def _adapter(cfg: OFAConfig, dim: int) -> nn.Module:
    if cfg.adapter_experts:
        return InterpolatedAdapter(dim, cfg.adapter_dim, cfg.adapter_experts)
    return Adapter(dim, cfg.adapter_dim)


class _FFN(nn.Module):
    """Shared FFN half of both blocks (``fc1 -> GELU -> [ffn_layernorm] -> fc2``)."""

    def _init_ffn(self, cfg: OFAConfig, dim: int, ffn_dim: int) -> None:
        self.fc1 = Linear(dim, ffn_dim)
        self.fc2 = Linear(ffn_dim, dim)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim) if cfg.scale_fc else None
        self.final_layer_norm = nn.LayerNorm(dim)
        self.w_resid = nn.Parameter(torch.ones(dim)) if cfg.scale_resids else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation_dropout = nn.Dropout(cfg.activation_dropout)
        # the original's --adapter: a bottleneck at the end of the FFN branch (openofa/petl); with
        # attn_adapter (the π-Tuning code's) one after the self-attention too
        self.adapter = _adapter(cfg, dim) if cfg.adapter else None
        self.attn_adapter = _adapter(cfg, dim) if cfg.attn_adapter else None

    def _attn_residual(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x`` plus the self-attention branch ``h`` (after its dropout and optional adapter)."""
        h = self.dropout(h)
        if self.attn_adapter is not None:
            h = self.attn_adapter(h)
        return x + self.drop_path(h)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation_dropout(_gelu(self.fc1(self.final_layer_norm(x))))
        if self.ffn_layernorm is not None:
            h = self.ffn_layernorm(h)
        h = self.dropout(self.fc2(h))
        if self.adapter is not None:
            h = self.adapter(h)
        residual = x if self.w_resid is None else self.w_resid * x
        return residual + self.drop_path(h)


class EncoderLayer(_FFN):
    def __init__(self, cfg: OFAConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.self_attn = Attention(dim, cfg.encoder_attention_heads, cfg.attn_scale_factor, cfg.scale_heads,
                                   cfg.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.attn_ln = nn.LayerNorm(dim) if cfg.scale_attn else None
        self.drop_path = DropPath(drop_path)
        self._init_ffn(cfg, dim, cfg.encoder_ffn_embed_dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.self_attn(self.self_attn_layer_norm(x), bias=bias, prefix=prefix)
        if self.attn_ln is not None:
            h = self.attn_ln(h)
        return self._ffn(self._attn_residual(x, h))


class DecoderLayer(_FFN):
    def __init__(self, cfg: OFAConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dim = cfg.decoder_embed_dim
        heads = cfg.decoder_attention_heads
        self.self_attn = Attention(dim, heads, cfg.attn_scale_factor, cfg.scale_heads, cfg.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn_ln = nn.LayerNorm(dim) if cfg.scale_attn else None
        self.encoder_attn = Attention(dim, heads, cfg.attn_scale_factor, cfg.scale_heads, cfg.attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.cross_attn_ln = nn.LayerNorm(dim) if cfg.scale_attn else None
        self.drop_path = DropPath(drop_path)
        self._init_ffn(cfg, dim, cfg.decoder_ffn_embed_dim)

    def forward(self, x: torch.Tensor, self_bias: torch.Tensor | None,
                cross_kv: tuple[torch.Tensor, torch.Tensor], cross_bias: torch.Tensor | None,
                self_kv: KVStore | None = None, group: int = 1,
                need_weights: bool = False,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, T, C). ``cross_kv``: encoder keys/values (N / group, H, S, d), shared by the
        ``group`` consecutive rows of ``x`` that decode the same input (beam search), with
        ``cross_bias`` (N / group, H, T, S). ``self_kv``: the cache of earlier steps, or None for
        teacher forcing over the whole sequence. ``prefix`` (teacher forcing; a cache holds its
        own): self-attention key/value prefixes (N, H, L, d), ``self_bias`` covering only the
        sequence's keys. ``need_weights`` (teacher forcing only): also
        return the cross-attention probabilities (N, H, T, S), float32."""
        # self-attention
        h = self.self_attn_layer_norm(x)
        att = self.self_attn
        q = att.project_q(h)
        k, v = att.project_kv(h)
        if self_kv is not None:
            k, v = self_kv.update(k, v)
        elif prefix is not None:
            k, v, self_bias = with_prefix(k, v, self_bias, prefix)
        h = att.merge(att.attend(q, k, v, self_bias))
        if self.self_attn_ln is not None:
            h = self.self_attn_ln(h)
        x = self._attn_residual(x, h)
        # cross-attention; rows of one group share the encoder keys, so fold them into the query axis
        h = self.encoder_attn_layer_norm(x)
        att = self.encoder_attn
        q = att.project_q(h)
        ck, cv = cross_kv
        if need_weights and group > 1:
            raise ValueError("need_weights is for teacher forcing (group 1)")
        if group > 1:
            n, nh, t, d = q.shape
            q = q.view(n // group, group, nh, t, d).transpose(1, 2).reshape(n // group, nh, group * t, d)
            bias = None
            if cross_bias is not None:
                bias = cross_bias.unsqueeze(2).expand(-1, -1, group, -1, -1).reshape(n // group, nh, group * t, -1)
            o = att.attend(q, ck, cv, bias)
            o = o.view(n // group, nh, group, t, d).transpose(1, 2).reshape(n, nh, t, d)
        elif need_weights:
            o, weights = att.attend_with_weights(q, ck, cv, cross_bias)
        else:
            o = att.attend(q, ck, cv, cross_bias)
        h = att.merge(o)
        if self.cross_attn_ln is not None:
            h = self.cross_attn_ln(h)
        x = x + self.drop_path(self.dropout(h))
        x = self._ffn(x)
        return (x, weights) if need_weights else x
