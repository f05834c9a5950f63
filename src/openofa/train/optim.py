"""Optimizer, learning-rate schedule, gradient clipping and freezing, as in the original's scripts.

* **AdamW** with betas (0.9, 0.999), eps 1e-8, weight decay 0.01. fairseq's ``adam`` is already
  decoupled (AdamW-style: ``p -= lr * wd * p`` before the Adam step) and decays *every* trainable
  parameter (biases, LayerNorms, embeddings too); so does this one (one parameter group). The only
  difference from fairseq's arithmetic: fairseq adds ``eps`` to ``sqrt(v)`` before the bias
  correction, torch after it, which changes the effective eps by ``1/sqrt(1 - beta2^t)`` (a
  difference that matters only for gradients around 1e-7 in the very first updates).
* **Polynomial decay with linear warmup** (fairseq's ``polynomial_decay``): the lr rises linearly
  over ``warmup`` updates, then falls as ``(lr - end_lr) * (1 - progress)^power + end_lr`` and stays
  at ``end_lr`` after ``total`` updates. ``warmup = int(total * warmup_ratio)`` unless given.
* **Gradient clipping** of the global L2 norm (``clip_norm`` 1.0; 0 = measure only).
* **Freezing**: the shared token embedding (it is also the output projection), the whole ResNet
  trunk, or only the trunk's batch norms (statistics *and* affine parameters, which is what the
  original's ``--freeze-resnet`` does through ``FrozenBatchNorm2d``).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from openofa.errors import OFAError


# ---- freezing ------------------------------------------------------------------------------------
def _trunk(model: nn.Module) -> nn.Module:
    return model.encoder.embed_images


def apply_freezing(model: nn.Module, *, freeze_embedding: bool = False, freeze_resnet: bool = False,
                   freeze_bn: bool = False) -> None:
    """Switch ``requires_grad`` off where asked (call before building the optimizer)."""
    if freeze_embedding:
        # encoder and decoder share one embedding, which is also the output projection
        model.encoder.embed_tokens.weight.requires_grad_(False)
    trunk = _trunk(model)
    if freeze_resnet:
        trunk.requires_grad_(False)
    elif freeze_bn:
        for m in trunk.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.requires_grad_(False)


def set_train_mode(model: nn.Module, *, freeze_resnet: bool = False, freeze_bn: bool = False) -> None:
    """``model.train()``, with frozen parts kept in eval mode (batch norms use and keep their
    running statistics; a frozen trunk also skips its drop path)."""
    model.train()
    trunk = _trunk(model)
    if freeze_resnet:
        trunk.eval()
    elif freeze_bn:
        for m in trunk.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that get gradients, each once (the tied embedding appears once)."""
    return [p for p in model.parameters() if p.requires_grad]


# ---- optimizer -----------------------------------------------------------------------------------
def lr_scale_groups(named_params: Iterable[tuple[str, nn.Parameter]], scales: dict[str, float]) -> list[dict]:
    """Parameter groups for AdamW: the parameters whose name starts with a prefix of ``scales`` get
    that learning-rate multiplier (the longest matching prefix wins), the others 1.0. Each group
    carries ``lr_scale``; the schedule sets ``lr * lr_scale`` on it."""
    for prefix, scale in scales.items():
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
            raise OFAError(f"lr_scale[{prefix!r}] must be a number > 0, got {scale!r}")
    groups: dict[float, list[nn.Parameter]] = {}
    used: set[str] = set()
    for name, p in named_params:
        hits = [k for k in scales if name == k or name.startswith(k.rstrip(".") + ".")]
        key = max(hits, key=len) if hits else None
        if key is not None:
            used.add(key)
        groups.setdefault(float(scales[key]) if key is not None else 1.0, []).append(p)
    unused = sorted(set(scales) - used)
    if unused:
        raise OFAError(f"lr_scale: no trainable parameter is named {', '.join(map(repr, unused))} (or below it)")
    return [{"params": ps, "lr_scale": scale} for scale, ps in groups.items()]


def build_optimizer(params: Iterable[nn.Parameter] | list[dict], *, lr: float,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """AdamW over ``params`` (parameters, or groups from :func:`lr_scale_groups`)."""
    params = list(params)
    flat = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
    if not flat:
        raise OFAError("nothing to train: every parameter is frozen")
    if lr <= 0:
        raise OFAError(f"lr must be > 0, got {lr}")
    # torch's fused kernel on CUDA, and on CPU from torch 2.4 (one pass over every parameter instead
    # of a dozen small ops per tensor: a third of the time, which counts for small models)
    devices = {p.device.type for p in flat}
    plain = all(type(p.data) is torch.Tensor for p in flat)
    fused = (plain and (devices == {"cuda"} or (devices == {"cpu"} and torch.__version__ >= (2, 4)))) or None
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)


# ---- learning-rate schedule ------------------------------------------------------------------------
def warmup_steps(total_updates: int, warmup_ratio: float = 0.0, warmup_updates: int = 0) -> int:
    """fairseq: ``--warmup-updates`` if given, else ``int(total * warmup_ratio)``."""
    if warmup_updates:
        return int(warmup_updates)
    return int(total_updates * warmup_ratio)


class PolynomialDecaySchedule:
    """fairseq's ``polynomial_decay``: ``lr_at(n)`` is the rate used by update ``n + 1`` (after
    ``n`` updates). The first two updates both use ``lr / warmup`` as in fairseq (the rate set at
    start-up, then the rate set after update 1). ``step(n)`` writes ``lr_at(n)`` into the optimizer."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, total_updates: int, warmup_updates: int = 0,
                 end_lr: float = 0.0, power: float = 1.0) -> None:
        if total_updates <= 0:
            raise OFAError(f"total number of updates must be > 0, got {total_updates}")
        if warmup_updates < 0 or warmup_updates > total_updates:
            raise OFAError(f"warmup of {warmup_updates} updates does not fit in {total_updates} updates")
        self.optimizer = optimizer
        self.lr = float(lr)
        self.total = int(total_updates)
        self.warmup = int(warmup_updates)
        self.end_lr = float(end_lr)
        self.power = float(power)
        self.num_updates = 0
        self.step(0)

    def lr_at(self, n: int) -> float:
        if self.warmup > 0 and n <= self.warmup:
            return self.lr * max(n, 1) / self.warmup
        if n >= self.total:
            return self.end_lr
        remaining = 1.0 - (n - self.warmup) / (self.total - self.warmup)
        return (self.lr - self.end_lr) * remaining ** self.power + self.end_lr

    def step(self, num_updates: int) -> float:
        self.num_updates = int(num_updates)
        lr = self.lr_at(self.num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def get_lr(self) -> float:
        """The schedule's rate (groups with an ``lr_scale`` use a multiple of it)."""
        return self.lr_at(self.num_updates)

    def state_dict(self) -> dict:
        return {"num_updates": self.num_updates, "lr": self.lr, "total": self.total, "warmup": self.warmup,
                "end_lr": self.end_lr, "power": self.power}

    def load_state_dict(self, state: dict) -> None:
        # the schedule itself comes from the config; the checkpoint only says where we are
        self.step(int(state["num_updates"]))


# ---- gradients -------------------------------------------------------------------------------------
@torch.no_grad()
def multiply_grads(params: Iterable[torch.Tensor], factor: float) -> None:
    for p in params:
        if p.grad is not None:
            p.grad.mul_(factor)


@torch.no_grad()
def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip the global L2 norm to ``max_norm`` (0: only measure it); return the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    if hasattr(norm, "full_tensor"):  # FSDP: a DTensor
        norm = norm.full_tensor()
    return float(norm)


# ---- exponential moving average of the weights ------------------------------------------------------
class EMA:
    """fairseq's EMA (``--store-ema --ema-fp32``): float32 copies of every floating state-dict entry
    (parameters and batch-norm statistics), ``ema = decay * ema + (1 - decay) * weight`` after each
    update, a plain copy while ``num_updates < start_update``; integer entries are copied.
    Entries that are the same tensor (the tied embedding) are kept once."""

    def __init__(self, model: nn.Module, decay: float, start_update: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise OFAError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.start_update = int(start_update)
        self.alias: dict[str, str] = {}  # state-dict key -> key of the shadow tensor
        self.shadow: dict[str, torch.Tensor] = {}
        seen: dict[int, str] = {}
        for k, v in model.state_dict(keep_vars=True).items():
            first = seen.setdefault(id(v), k)
            self.alias[k] = first
            if first == k:
                v = v.detach()
                self.shadow[k] = v.float().clone() if v.is_floating_point() else v.clone()

    @torch.no_grad()
    def step(self, model: nn.Module, num_updates: int) -> None:
        decay = 0.0 if num_updates < self.start_update else self.decay
        sd = model.state_dict()
        ema, new = [], []
        for k, s in self.shadow.items():
            v = sd[k].detach()
            if s.is_floating_point():
                ema.append(s)
                new.append(v.float())
            else:
                s.copy_(v)
        if decay == 0.0:
            torch._foreach_copy_(ema, new)
        else:
            torch._foreach_mul_(ema, decay)
            torch._foreach_add_(ema, new, alpha=1.0 - decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "start_update": self.start_update,
                "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise OFAError("EMA state in the checkpoint does not fit the model")
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under every state-dict key of the model."""
        return {k: self.shadow[src] for k, src in self.alias.items()}
