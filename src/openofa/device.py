"""Device names from users (CLI ``--device``, ``openofa.load(device=...)``, recipes), checked once
so that a typo or a missing GPU is a one-line error instead of a failure deep inside torch."""

from __future__ import annotations

import torch

from openofa.errors import OFAError


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``None`` = CPU; ``auto`` = ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; ``cuda``
    = ``cuda:LOCAL_RANK``. A device this machine does not have is refused."""
    if device is None:
        return torch.device("cpu")
    asked = device
    if isinstance(device, str):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            device = f"cuda:{local_rank}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise OFAError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OFAError(f"device {asked} asked for, but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OFAError(f"device {asked} asked for, but this machine has {torch.cuda.device_count()} "
                           f"CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise OFAError(f"device {asked} asked for, but MPS is not available")
    return dev
