"""openofa.precision: dtype names and ``auto`` (bf16 only where this machine computes it faster)."""

from __future__ import annotations

import math

import pytest
import torch

from openofa import precision
from openofa.errors import OFAError
from openofa.precision import AUTO_MIN_SPEEDUP, cpu_bf16_speedup, fast_dtype, resolve_dtype


def test_names_and_dtypes():
    assert resolve_dtype(None) is torch.float32
    assert resolve_dtype("fp32") is torch.float32 and resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("fp16") is torch.float16
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(OFAError, match=r"unknown dtype 'int4'.*auto"):
        resolve_dtype("int4")
    with pytest.raises(OFAError, match=r"int8 quantises the image trunk .*OFA.load"):
        resolve_dtype("int8")  # a mode of a loaded model, not a dtype


@pytest.mark.parametrize("speedup, expected", [(2.6, torch.bfloat16), (AUTO_MIN_SPEEDUP, torch.bfloat16),
                                               (1.1, torch.float32), (0.55, torch.float32)])
def test_auto_on_cpu_follows_the_measured_speed(monkeypatch, speedup, expected):
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    assert fast_dtype("cpu") is expected
    assert resolve_dtype("auto", "cpu") is expected
    assert resolve_dtype("auto") is expected  # no device = the CPU


@pytest.mark.parametrize("bf16_ok, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_follows_the_gpu(monkeypatch, bf16_ok, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: pytest.fail("no CPU probe for a GPU"))
    assert resolve_dtype("auto", torch.device("cuda", 0)) is expected


def test_the_cpu_probe_measures_once():
    cpu_bf16_speedup.cache_clear()
    first = cpu_bf16_speedup(rows=32, dim=128)
    assert math.isfinite(first) and first > 0
    assert cpu_bf16_speedup(rows=32, dim=128) == first  # cached: one measurement per process
    assert cpu_bf16_speedup.cache_info().hits == 1
    cpu_bf16_speedup.cache_clear()
