"""The original's parameter-efficient methods added to a built model: adapters, prefix tuning
and BitFit. The modules themselves are part of the architecture (``model/adapter.py``,
``model/prompt.py``) and the config records them, so a saved model loads with them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from openofa.errors import OFAError
from openofa.model.adapter import Adapter
from openofa.model.prompt import prompt_encoder_for


def _update_config(model, **changes):
    """A new config with ``changes`` for the model and its halves (a config object may be shared
    with other models, so it is never changed in place)."""
    cfg = dataclasses.replace(model.config, **changes)
    model.config = model.encoder.cfg = model.decoder.cfg = cfg
    return cfg


def add_adapters(model, dim: int, attention: bool = False) -> list[str]:
    """Give every encoder and decoder layer of ``model`` an adapter of bottleneck ``dim`` at the end
    of its FFN branch, and with ``attention`` one after its self-attention too (the π-Tuning
    code's two adapters); the config records them, so saving and loading keep them. Returns the
    names of the new parameters."""
    cfg = _update_config(model, adapter=True, adapter_dim=int(dim), attn_adapter=bool(attention))
    names = []
    ref = model.encoder.embed_tokens.weight
    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            for attr in ("adapter", "attn_adapter") if attention else ("adapter",):
                if getattr(layer, attr) is None:
                    setattr(layer, attr, Adapter(cfg.embed_dim, dim).to(device=ref.device, dtype=ref.dtype))
                names += [f"{side}.layers.{i}.{attr}.{n}" for n, _ in getattr(layer, attr).named_parameters()]
    return names


def add_prefix(model, side: str, length: int = 100, projection: bool = False, prompt_dim: int = 0) -> list[str]:
    """Give the ``side`` ("encoder" or "decoder") of ``model`` a prefix of ``length`` positions
    (recorded in the config). Returns the names of the new parameters."""
    if side not in ("encoder", "decoder"):
        raise ValueError(f"side must be 'encoder' or 'decoder', got {side!r}")
    cfg = _update_config(model, **{f"{side}_prompt": True, f"{side}_prompt_type": "prefix",
                                   f"{side}_prompt_length": int(length),
                                   f"{side}_prompt_projection": bool(projection),
                                   f"{side}_prompt_dim": int(prompt_dim)})
    module = getattr(model, side)
    attr = f"{side}_prompt_encoder"
    ref = model.encoder.embed_tokens.weight
    if getattr(module, attr) is None:
        setattr(module, attr, prompt_encoder_for(cfg, side).to(device=ref.device, dtype=ref.dtype))
    return [f"{side}.{attr}.{n}" for n, _ in getattr(module, attr).named_parameters()]


def bitfit_names(model) -> list[str]:
    """The original's BitFit selection (``train.py --bitfit``): the biases of layer norms named
    ``*layer_norm*`` (each layer's ``self_attn_layer_norm``, ``encoder_attn_layer_norm``,
    ``final_layer_norm`` and the final ``encoder/decoder.layer_norm``) and of ``fc1``/``fc2``.
    Attention-projection biases and the ``attn_ln``, ``ffn_layernorm`` and ``layernorm_embedding``
    biases stay frozen, as there."""
    return [n for n, _ in model.named_parameters()
            if ("layer_norm" in n and "bias" in n) or ("fc" in n and "bias" in n)]


@dataclass
class Adapters:
    """The ``petl`` recipe section ``method: adapter`` (the original's ``--adapter --adapter-dim``)."""

    dim: int = 200
    attention: bool = False  # also one after each self-attention (the π-Tuning code's adapter1)

    name = "adapter"

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim <= 0:
            raise OFAError(f"petl: adapter dim must be a positive integer, got {self.dim!r}")

    def apply(self, model) -> list[str]:
        return add_adapters(model, self.dim, self.attention)

    def trainable(self, model) -> list[str]:
        return [n for n, _ in model.named_parameters() if ".adapter." in n or ".attn_adapter." in n]


@dataclass
class Prefix:
    """The ``petl`` recipe section ``method: prefix`` (the original's ``--encoder-prompt
    --decoder-prompt`` with type ``prefix``)."""

    encoder: bool = True
    decoder: bool = True
    length: int = 100
    projection: bool = False
    prompt_dim: int = 0

    name = "prefix"

    def __post_init__(self) -> None:
        if not (self.encoder or self.decoder):
            raise OFAError("petl: prefix needs encoder: true, decoder: true or both")
        if not isinstance(self.length, int) or self.length <= 0:
            raise OFAError(f"petl: prefix length must be a positive integer, got {self.length!r}")

    def apply(self, model) -> list[str]:
        added = []
        for side in ("encoder", "decoder"):
            if getattr(self, side):
                added += add_prefix(model, side, self.length, self.projection, self.prompt_dim)
        return added

    def trainable(self, model) -> list[str]:
        return [n for n, _ in model.named_parameters() if "_prompt_encoder." in n]


@dataclass
class BitFit:
    """The ``petl`` recipe section ``method: bitfit`` (the original's ``--bitfit``): no new
    parameters, the selected biases train."""

    name = "bitfit"

    def apply(self, model) -> list[str]:
        return []

    def trainable(self, model) -> list[str]:
        return bitfit_names(model)
