"""The original's parameter-efficient methods added to a built model: adapters, prefix tuning
and BitFit. The modules themselves are part of the architecture (``model/adapter.py``,
``model/prompt.py``) and the config records them, so a saved model loads with them."""

from __future__ import annotations

from openofa.model.adapter import Adapter
from openofa.model.prompt import prompt_encoder_for


def add_adapters(model, dim: int) -> list[str]:
    """Give every encoder and decoder layer of ``model`` an adapter of bottleneck ``dim`` (the
    config records it, so saving and loading keep it). Returns the names of the new parameters."""
    cfg = model.config
    cfg.adapter, cfg.adapter_dim = True, int(dim)
    names = []
    ref = model.encoder.embed_tokens.weight
    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            if layer.adapter is None:
                layer.adapter = Adapter(cfg.embed_dim, dim).to(device=ref.device, dtype=ref.dtype)
            names += [f"{side}.layers.{i}.adapter.{n}" for n, _ in layer.adapter.named_parameters()]
    return names


def add_prefix(model, side: str, length: int = 100, projection: bool = False, prompt_dim: int = 0) -> list[str]:
    """Give the ``side`` ("encoder" or "decoder") of ``model`` a prefix of ``length`` positions
    (recorded in the config). Returns the names of the new parameters."""
    if side not in ("encoder", "decoder"):
        raise ValueError(f"side must be 'encoder' or 'decoder', got {side!r}")
    cfg = model.config
    setattr(cfg, f"{side}_prompt", True)
    setattr(cfg, f"{side}_prompt_type", "prefix")
    setattr(cfg, f"{side}_prompt_length", int(length))
    setattr(cfg, f"{side}_prompt_projection", bool(projection))
    setattr(cfg, f"{side}_prompt_dim", int(prompt_dim))
    module = getattr(model, side)
    attr = f"{side}_prompt_encoder"
    ref = model.encoder.embed_tokens.weight
    if getattr(module, attr) is None:
        setattr(module, attr, prompt_encoder_for(cfg, side).to(device=ref.device, dtype=ref.dtype))
    return [f"{side}.{attr}.{n}" for n, _ in getattr(module, attr).named_parameters()]
