"""``Linear``: ``nn.Linear`` that can keep a copy of its weight pre-packed for CPU inference.

Decoding one token at a time multiplies a few rows (batch x beams) by every weight of the decoder,
so a step is bound by how fast the weights stream through the cores, not by arithmetic. A plain
``F.linear`` on CPU hands oneDNN/MKL a row-major weight that it re-lays out or reads with poor
locality at every call; :meth:`Linear.prepack` lays the weight out once in oneDNN's blocked format
and later calls multiply by that copy (1.2x-2x faster for the output projection over the
vocabulary, ~1.5x for the FFN of base, measured in docs/design.md). The arithmetic is the same
float32 (or bf16) product with float32 accumulation; results differ from ``F.linear`` only by
summation order (~1e-6 relative).

The packed copy is a cache, never the truth: it is ignored (and the plain path used) whenever the
weight changed after packing (an in-place update, ``load_state_dict``, ``.to()``), when autograd
needs the product, for inputs of another dtype or device, and it is dropped from pickles and
deep copies. State-dict keys are those of ``nn.Linear``.
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F
from torch import nn


def packing_available() -> bool:
    """Whether this PyTorch build has the oneDNN linear kernels that take pre-packed weights."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


@functools.lru_cache(maxsize=None)
def packed_is_faster(out_features: int, in_features: int, dtype: torch.dtype = torch.float32, rows: int = 5,
                     reps: int = 15) -> bool:
    """Whether, on this CPU with the current thread count, a ``rows``-row product with an
    (``out_features`` x ``in_features``) weight runs faster through the packed oneDNN kernel than
    through ``F.linear``: timed once per process and shape (best of ``reps`` each, about a
    millisecond). The answer depends on the CPU: on the AMD EPYC of the development machine MKL's
    small products were 1.3x-4x slower than the packed ones from 512x512 and 256x1024 weights up
    (faster only at 256x256), while on an earlier day's CPU the plain product held its own below
    2^20 elements (docs/design.md)."""
    if not packing_available():
        return False
    with torch.inference_mode():
        x = torch.randn(rows, in_features, dtype=dtype)
        w = torch.randn(out_features, in_features, dtype=dtype)
        b = torch.randn(out_features, dtype=dtype)
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(w)
        except RuntimeError:
            return False

        def best(f) -> float:
            f()
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                f()
                times.append(time.perf_counter() - t)
            return min(times)

        plain = best(lambda: F.linear(x, w, b))
        fast = best(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], ""))
    return fast < 0.9 * plain


def _weight_key(w: torch.Tensor) -> tuple:
    return w._version, w.data_ptr(), w.dtype, w.device


class Linear(nn.Linear):
    _packed: torch.Tensor | None = None
    _packed_key: tuple | None = None

    @torch.no_grad()
    def prepack(self) -> bool:
        """Pack the current weight for oneDNN (CPU, float32 or bf16); False when not possible."""
        w = self.weight
        if w.device.type != "cpu" or w.dtype not in (torch.float32, torch.bfloat16) or not packing_available():
            self.unpack()
            return False
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(w.detach())
        except RuntimeError:  # a build whose oneDNN lacks this path: the plain product stays
            self.unpack()
            return False
        self._packed, self._packed_key = packed, _weight_key(w)
        return True

    def unpack(self) -> None:
        self._packed = self._packed_key = None

    @property
    def is_packed(self) -> bool:
        """Whether the next product can use the packed copy (it still matches the weight)."""
        return self._packed is not None and self._packed_key == _weight_key(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.is_packed and x.dtype == self.weight.dtype and x.device.type == "cpu"
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            y = torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")
        else:
            y = F.linear(x, self.weight, self.bias)
        lora_a = self._modules.get("lora_A")  # a low-rank update (openofa/petl/lora.py), until merged
        if lora_a is not None:
            h = F.dropout(x, p=self.lora_dropout, training=self.training) if self.lora_dropout else x
            y = y + self._modules["lora_B"](lora_a(h)) * self.lora_scaling
        return y

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_packed", None)
        state.pop("_packed_key", None)
        return state
