"""π-Tuning: adapters of several tasks ("experts") mixed for a target task, the experts chosen by
task similarity (Wu et al., ICML 2023, "π-Tuning: Transferring Multimodal Foundation Models with
Optimal Multi-task Interpolation"; what was followed is in docs/petl.md).

1. Train one adapter per task (``petl: {method: adapter}``): the experts.
2. Embed each task: the diagonal of the empirical Fisher information of its expert's weights
   on its own data (:func:`fisher_embedding`), and compare embeddings (:func:`task_similarity`,
   :func:`rank_experts`) to pick the experts most similar to the target task.
3. Interpolate (``petl: {method: pi, experts: [...]}``): every layer's adapter becomes
   ``softmax(w)``-weighted mix of the chosen experts' adapters (:class:`~openofa.model.adapter.
   InterpolatedAdapter`); the mixing weights ``w`` (one vector per layer, starting equal) and the
   experts' copies train on the target task.

Experts are read from adapter folders (``openofa.petl.files``) and from whole models in any layout
that carry adapters (the original's ``--adapter`` files included). Files written by the π-Tuning
code (its experts, with an adapter after the self-attention and one after the FFN, ``adapter1`` /
``adapter2``, and its interpolated models, ``adapters1.K`` / ``adapters2.K`` with
``adapter_interpolation_weight1/2``) load as openofa models through :func:`from_pi_tuning_layout`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from openofa.errors import OFAError

_ADAPTER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(adapter|attn_adapter)\.((?:down|up)_proj\.(?:weight|bias))$")
# the π-Tuning code's names: adapter1 / adapters1.K / adapter_interpolation_weight1 after the
# self-attention, the same with 2 at the end of the FFN branch
_PI_KEY = re.compile(r"^((?:encoder|decoder)\.layers\.\d+)\.(?:adapter([12])\.|adapters([12])\.(\d+)\.|"
                     r"adapter_interpolation_weight([12])$)")
_PI_NAMES = {"1": "attn_adapter", "2": "adapter"}


def from_pi_tuning_layout(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """A state dict in the π-Tuning code's names, in openofa's, with the config fields it needs:
    ``layers.N.adapter2.X`` -> ``layers.N.adapter.X`` (the FFN adapter) and ``adapter1`` ->
    ``attn_adapter`` (after the self-attention); interpolated ``adapters2.K.X`` ->
    ``adapter.experts.K.X`` and ``adapter_interpolation_weight2`` ->
    ``adapter.interpolation_weight`` (1: ``attn_adapter``). Other keys are kept. The fields are
    empty when no key is in that layout."""
    out: dict[str, torch.Tensor] = {}
    experts: set[int] = set()
    mapped = False
    for key, value in state_dict.items():
        m = _PI_KEY.match(key)
        if m is None:
            out[key] = value
            continue
        mapped = True
        layer, single, many, k, weight = m.groups()
        rest = key[m.end():]
        if single:
            out[f"{layer}.{_PI_NAMES[single]}.{rest}"] = value
        elif many:
            experts.add(int(k))
            out[f"{layer}.{_PI_NAMES[many]}.experts.{k}.{rest}"] = value
        else:
            out[f"{layer}.{_PI_NAMES[weight]}.interpolation_weight"] = value
    if not mapped:
        return out, {}
    downs = [v for k, v in out.items() if k.endswith("down_proj.weight") and "adapter" in k]
    fields = {"adapter": True, "attn_adapter": any(".attn_adapter." in k for k in out),
              "adapter_experts": len(experts), "adapter_dim": int(downs[0].shape[0]) if downs else 0}
    return out, fields


def expert_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """The adapter weights (``{encoder|decoder}.layers.N.adapter.(down|up)_proj.*``) of an expert:
    an adapter folder or a whole model in any layout that has adapters."""
    from openofa.petl.files import is_adapter_folder, read_adapter

    if is_adapter_folder(source):
        specs, tensors, _ = read_adapter(source)
        if [s["method"] for s in specs] != ["adapter"]:
            raise OFAError(f"{source}: π-Tuning mixes adapters; this folder holds {', '.join(s['method'] for s in specs)}")
    else:
        from openofa.checkpoints import load_checkpoint

        config, tensors, _ = load_checkpoint(source)
        if not config.adapter or config.adapter_experts:
            raise OFAError(f"{source}: not a model with one adapter per layer (an expert for π-Tuning)")
    weights = {k: v for k, v in tensors.items() if _ADAPTER.match(k)}
    if not weights:
        raise OFAError(f"{source}: no adapter weights")
    return weights


@dataclass
class PiTuning:
    """The ``petl`` recipe section ``method: pi``: the experts' adapters mixed per layer."""

    experts: list[str] = field(default_factory=list)
    learnable: bool = True  # the mixing weights train (the π-Tuning code's --learnable-scale)
    train_experts: bool = True  # the experts' copies train too, as in the π-Tuning code
    init: list[float] | None = None  # the mixing weights' starting logits (default: equal)

    name = "pi"

    def __post_init__(self) -> None:
        if not isinstance(self.experts, list) or len(self.experts) < 2 or not all(
                isinstance(e, (str, Path)) for e in self.experts):
            raise OFAError(f"petl: pi needs experts: a list of at least two adapter folders or models, got {self.experts!r}")
        if self.init is not None and len(self.init) != len(self.experts):
            raise OFAError(f"petl: pi init has {len(self.init)} values for {len(self.experts)} experts")

    def apply(self, model) -> list[str]:
        loaded = [expert_weights(e) for e in self.experts]
        first = loaded[0]
        for path, weights in zip(self.experts[1:], loaded[1:]):
            if set(weights) != set(first) or any(weights[k].shape != first[k].shape for k in first):
                raise OFAError(f"{path}: its adapters differ in shape or layers from those of {self.experts[0]}")
        dim = next(v for k, v in first.items() if k.endswith("down_proj.weight")).shape[0]
        attention = any(".attn_adapter." in k for k in first)
        added = build_interpolated(model, len(loaded), dim, attention)
        own = dict(model.named_parameters())
        with torch.no_grad():
            for k, weights in enumerate(loaded):
                for key, value in weights.items():
                    side, layer, attr, part = _ADAPTER.match(key).groups()
                    target = own.get(f"{side}.layers.{layer}.{attr}.experts.{k}.{part}")
                    if target is None or target.shape != value.shape:
                        raise OFAError(f"{self.experts[k]}: adapter {key} {tuple(value.shape)} does not fit this model")
                    target.copy_(value)
            missing = [n for n in added if ".experts.0." in n and n.replace(".experts.0.", ".") not in first]
            if missing:
                raise OFAError(f"{self.experts[0]}: no adapter for {missing[0].replace('.experts.0.', '.')}")
            if self.init is not None:
                for name in added:
                    if name.endswith("interpolation_weight"):
                        own[name].copy_(torch.tensor(self.init, dtype=torch.float32))
        return added

    def trainable(self, model) -> list[str]:
        out = []
        for name, _ in model.named_parameters():
            if ".experts." in name and self.train_experts:
                out.append(name)
            elif name.endswith(".interpolation_weight") and self.learnable:
                out.append(name)
        return out


def build_interpolated(model, experts: int, dim: int, attention: bool = False) -> list[str]:
    """Every layer of ``model`` gets an interpolated adapter of ``experts`` experts of bottleneck
    ``dim`` (with ``attention`` one after the self-attention too), recorded in the config;
    returns the new parameters' names."""
    from openofa.model.adapter import InterpolatedAdapter
    from openofa.petl.original import _update_config

    cfg = _update_config(model, adapter=True, adapter_dim=int(dim), adapter_experts=int(experts),
                         attn_adapter=bool(attention))
    ref = model.encoder.embed_tokens.weight
    added = []
    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            for attr in ("adapter", "attn_adapter") if attention else ("adapter",):
                mixed = InterpolatedAdapter(cfg.embed_dim, dim, experts).to(device=ref.device, dtype=ref.dtype)
                setattr(layer, attr, mixed)
                added += [f"{side}.layers.{i}.{attr}.{n}" for n, _ in mixed.named_parameters()]
    return added


# ---- task similarity --------------------------------------------------------------------------------


def fisher_embedding(model, batches: Iterable, loss_fn: Callable, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """A task's embedding: the diagonal of the empirical Fisher information of the parameters
    ``names`` (its expert's weights), the mean over ``batches`` of the squared gradient of
    ``loss_fn(model, batch)`` (the training loss on the task's own targets, as the π-Tuning code
    computes it; one gradient per batch). Nothing is updated."""
    wanted = set(names)
    params = {n: p for n, p in model.named_parameters() if n in wanted}
    if not params:
        raise OFAError("fisher_embedding: none of the named parameters is in the model")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in params)
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            for n, p in params.items():
                if p.grad is not None:
                    sums[n] += p.grad.detach().float() ** 2
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    if not count:
        raise OFAError("fisher_embedding: no batches")
    return {n: s / count for n, s in sums.items()}


def task_similarity(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], eps: float = 1e-6) -> float:
    """Similarity of two task embeddings as the π-Tuning code computes it: per parameter, each
    embedding is normalised by the sum of both (``a / (a + b + eps)``), the cosine of the two
    normalised vectors is taken, and the cosines are averaged over the parameters both have."""
    keys = [k for k in a if k in b]
    if not keys:
        raise OFAError("task_similarity: the two embeddings share no parameter")
    cosines = []
    for k in keys:
        x, y = a[k].flatten().double(), b[k].flatten().double()
        total = x + y + eps
        x, y = x / total, y / total
        cosines.append(float(torch.nn.functional.cosine_similarity(x, y, dim=0)))
    return sum(cosines) / len(cosines)


def rank_experts(target: Mapping[str, torch.Tensor], experts: Mapping[str, Mapping[str, torch.Tensor]],
                 top_k: int | None = None) -> list[tuple[str, float]]:
    """The experts' names with their similarity to ``target``, most similar first (the first
    ``top_k`` when given): which experts to interpolate."""
    ranked = sorted(((name, task_similarity(target, emb)) for name, emb in experts.items()),
                    key=lambda x: -x[1])
    return ranked[:top_k] if top_k else ranked
