"""The blocks' helpers (openofa/model/layers.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from openofa.model.layers import _gelu


def _every_finite(dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    return x[torch.isfinite(x)]


def test_gelu_in_reduced_precision_is_the_float32_gelu_rounded_once():
    """The original computes GELU in float32 for half-precision inputs; ours gives the same value
    for every bf16 and fp16 input of magnitude 1e-30 and above (bf16 takes PyTorch's own bf16
    kernel, which computes in float32 internally and may flush the tiniest results to zero)."""
    for dtype in (torch.bfloat16, torch.float16):
        x = _every_finite(dtype)
        want = F.gelu(x.float()).to(dtype)
        got = _gelu(x)
        assert got.dtype == dtype
        normal = x.float().abs() >= 1e-30
        if dtype == torch.float16:  # the same casts: the same values
            assert torch.equal(got[normal], want[normal])
        else:  # PyTorch's bf16 kernel: equal here; another CPU's vector path may round an input an ulp apart
            same = (got[normal] == want[normal]).float().mean().item()
            gap = (got[normal].float() - want[normal].float()).abs()
            close = (gap <= 2 ** -7 * want[normal].float().abs()) | (got[normal] == want[normal])  # inf == inf
            assert same >= 0.999 and close.all(), same
        assert (got[~normal].float().abs() < 1e-30).all() and (want[~normal].float().abs() < 1e-30).all()
    x = torch.randn(1000)
    assert torch.equal(_gelu(x), F.gelu(x))
