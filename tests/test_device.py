"""Device names: one-line errors for a typo or a device this machine lacks."""

from __future__ import annotations

import pytest
import torch

from openofa.device import resolve_device
from openofa.errors import OFAError


def test_cpu_and_default():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("cuda, want", [(False, "cpu"), (True, "cuda:1")])
def test_auto_follows_cuda(monkeypatch, cuda, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device(want)


@pytest.mark.parametrize("name, cuda, count, message", [
    ("tpu", False, 0, "unknown device 'tpu'; expected auto, cpu, cuda or cuda:N"),
    ("cuda", False, 0, "device cuda asked for, but CUDA is not available"),
    ("cuda:3", True, 2, "device cuda:3 asked for, but this machine has 2 CUDA device(s)"),
])
def test_missing_or_unknown_devices_are_one_line_errors(monkeypatch, name, cuda, count, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    with pytest.raises(OFAError) as err:
        resolve_device(name)
    assert str(err.value) == message


def test_mps_without_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(OFAError, match="MPS is not available"):
        resolve_device("mps")
