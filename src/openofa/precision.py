"""Inference precision by name, and ``auto``: the fastest precision this machine really has.

bf16 is not faster everywhere. How fast a CPU multiplies bf16 matrices depends on its bf16
unit (AMX, or the AVX-512 bf16 dot-product instruction, whose speed differs between CPU models):
on the 2-core development machine, on two days with different CPU models underneath, bf16
products ran at 3x-4.7x and at 0.6x the float32 rate (docs/benchmarks.md). So ``auto`` measures
instead of guessing from CPU flags: on a CPU it times one bf16 and one float32 product once per
process and picks bf16 only when it is clearly faster; on CUDA it picks bf16 where the GPU
supports it, else float16.

``int8`` is not a dtype but a mode (CPU only): the image trunk runs in static int8
(:mod:`openofa.model.int8_trunk`), everything else in float32; ``int8-bf16`` runs the encoder's
transformer in bf16 as well (the decoder stays float32, as with ``bf16``). It changes tokens where float32's
top two are close, so it is judged by quality (held-out VQA accuracy, Acc@0.5 and CIDEr-D within
1 point of float32, and on the golden fixtures the best hypothesis equal to float32's except where
float32 scores its own and int8's within :data:`INT8_TIE_MARGIN` of each other), which it meets
(docs/benchmarks.md, "Reduced precision"). ``auto`` does not pick it all the same: its activation
scales come from calibration images, and inputs unlike them saturate, so it is a choice to make
with one's own images (``resolve_dtype`` refuses the name; :func:`is_int8` tells it apart). The
dynamic int8 of the decoder's linear layers (:mod:`openofa.model.int8`), measured too, paid
nothing and is not a mode.
"""

from __future__ import annotations

import functools
import time

import torch

from openofa.errors import OFAError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}

#: bf16 must beat float32 by this factor in the probe before ``auto`` takes it (measurement
#: noise on a shared machine is well below it; a real bf16 unit gives 2x or more)
AUTO_MIN_SPEEDUP = 1.3

#: int8 may change a generated sequence only where float32 scores its own best and int8's best
#: (length-normalised log-probability, ``openofa.model.int8.tie_margin``) closer than this; the
#: golden cases' flips measured 0.037 and -0.006 (docs/benchmarks.md, "Reduced precision")
INT8_TIE_MARGIN = 0.05


#: the int8 modes: the image trunk in int8 and the encoder's transformer in float32 or bf16
INT8_MODES = {"int8": torch.float32, "qint8": torch.float32, "int8-bf16": torch.bfloat16}


def is_int8(dtype) -> bool:
    """Whether ``dtype`` names an int8 mode (``int8``, ``int8-bf16``) rather than a floating dtype."""
    return isinstance(dtype, str) and dtype in INT8_MODES


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """A dtype from its name (``fp32``, ``bf16``, ``fp16`` or their long names), a dtype, None
    (float32), or ``auto``: :func:`fast_dtype` for ``device``."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return fast_dtype(device)
    if is_int8(dtype):
        raise OFAError("int8 quantises the image trunk of a loaded model: pass dtype='int8' to OFA.load")
    if dtype not in DTYPES:
        raise OFAError(f"unknown dtype {dtype!r}; expected one of fp32, bf16, fp16, auto")
    return DTYPES[dtype]


def fast_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """The low precision worth using on ``device`` for the image trunk and encoder, or float32."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_speedup() >= AUTO_MIN_SPEEDUP else torch.float32
    return torch.float32


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(rows: int = 256, dim: int = 1024, reps: int = 3) -> float:
    """float32 time over bf16 time for a (rows x dim) @ (dim x dim) product on this CPU with the
    current thread count, best of ``reps`` each (measured once per process, ~30 ms)."""

    def best(dtype: torch.dtype) -> float:
        a = torch.randn(rows, dim, dtype=dtype)
        b = torch.randn(dim, dim, dtype=dtype)
        a @ b  # first call sets up the kernel
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    with torch.inference_mode():
        return best(torch.float32) / best(torch.bfloat16)
