"""LoRA: a trainable low-rank update ``W + (alpha / r) * B @ A`` on chosen linear layers.

Each chosen :class:`~openofa.model.linear.Linear` gets two bias-free submodules, ``lora_A``
(in -> r, Kaiming-uniform init) and ``lora_B`` (r -> out, zero init, so training starts from the
base model exactly), plus ``lora_scaling`` and ``lora_dropout`` (on the input of ``lora_A``).
The base weight keeps its official key; the update's keys are ``<module>.lora_A.weight`` and
``<module>.lora_B.weight``, which is the ``peft`` library's layout once its adapter name is
dropped, so :mod:`openofa.petl.files` writes adapters ``peft`` reads.

Which layers: ``target_modules`` as ``peft`` reads it: a list of names, each matching a module
whose full name is that name or ends with ``.`` + that name (``["q_proj", "v_proj"]``,
``["fc1", "fc2"]``, ``["encoder.layers.0.self_attn.k_proj"]``), or a string read as a regular
expression that must match the whole module name. ``"all-linear"`` takes every linear of the
transformer. The output projection shares its weight with the token embedding and cannot carry
LoRA (merging would change the input embedding too).

:func:`merge_lora` adds the update into the base weight and removes the modules: the merged model
is a plain OFA model again (same outputs to float rounding, no extra cost, any checkpoint format).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from openofa.errors import OFAError
from openofa.model.linear import Linear

TIED = "decoder.output_projection"


def _matches(name: str, targets: list[str] | str) -> bool:
    if isinstance(targets, str):
        if targets == "all-linear":
            return True
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_targets(model: nn.Module, targets: list[str] | str) -> list[str]:
    """Names of the linear layers ``targets`` selects (see the module docstring)."""
    names = [n for n, m in model.named_modules() if isinstance(m, Linear) and n != TIED and _matches(n, targets)]
    if not isinstance(targets, str) or targets != "all-linear":
        if TIED in {n for n, m in model.named_modules() if isinstance(m, Linear) and _matches(n, targets)}:
            raise OFAError(f"target_modules selects {TIED}, which shares its weight with the token embedding; "
                           "LoRA cannot be put on it")
    if not names:
        raise OFAError(f"target_modules {targets!r} selects no linear layer of the model "
                       "(names look like encoder.layers.0.self_attn.q_proj, decoder.layers.2.fc1)")
    return names


@dataclass
class LoRA:
    """The ``petl`` recipe section ``method: lora``."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"])

    name = "lora"

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise OFAError(f"petl: lora r must be a positive integer, got {self.r!r}")
        if not 0 <= float(self.dropout) < 1:
            raise OFAError(f"petl: lora dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if not isinstance(self.target_modules, (str, list)) or (
                isinstance(self.target_modules, list) and not all(isinstance(t, str) for t in self.target_modules)):
            raise OFAError(f"petl: lora target_modules must be a list of names or a pattern, got {self.target_modules!r}")
        self.alpha = float(self.alpha)
        self.dropout = float(self.dropout)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def apply(self, model: nn.Module) -> list[str]:
        """Put LoRA on the chosen layers; returns the new parameters' names."""
        added = []
        for name in lora_targets(model, self.target_modules):
            lin = model.get_submodule(name)
            if "lora_A" in lin._modules:
                raise OFAError(f"{name} already carries LoRA")
            w = lin.weight
            a = nn.Linear(lin.in_features, self.r, bias=False, device=w.device, dtype=w.dtype)
            b = nn.Linear(self.r, lin.out_features, bias=False, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
                nn.init.zeros_(b.weight)
            lin.lora_A, lin.lora_B = a, b
            lin.lora_scaling, lin.lora_dropout = self.scaling, self.dropout
            added += [f"{name}.lora_A.weight", f"{name}.lora_B.weight"]
        return added

    def trainable(self, model: nn.Module) -> list[str]:
        return [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]


def lora_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, Linear) and "lora_A" in m._modules]


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its base weight and drop the LoRA modules; returns how many
    layers were merged."""
    names = lora_layers(model)
    for name in names:
        lin = model.get_submodule(name)
        a, b = lin._modules.pop("lora_A"), lin._modules.pop("lora_B")
        delta = (b.weight.float() @ a.weight.float()) * lin.lora_scaling
        lin.weight.add_(delta.to(lin.weight.dtype))
        del lin.lora_scaling, lin.lora_dropout
    return len(names)
