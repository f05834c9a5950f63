"""Deterministic "recipe" weights: every tensor is a function of its official key name and shape
only (see the golden ``weights.md``), so any implementation can regenerate the weights that the
reference fixtures were produced with, and tests can build checkpoints without downloads."""

from __future__ import annotations

import hashlib
import math
import zlib
from collections import OrderedDict
from typing import Mapping, Sequence

import torch

from openofa.config import OFAConfig
from openofa.checkpoints.keys import EMBED_KEY, TIED_KEYS, computed_buffers, is_computed, official_keys


def recipe_tensor(key: str, shape: Sequence[int]) -> torch.Tensor:
    """The recipe value of one key: one draw from a fresh CPU generator seeded with crc32(key)."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    shape = tuple(int(s) for s in shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=g)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    if leaf == "bias":
        return 0.02 * torch.randn(shape, generator=g)
    return 1.0 + 0.1 * torch.randn(shape, generator=g)


def recipe_state_dict(config: OFAConfig, *, computed: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """Recipe weights for every official key of ``config`` (our model's keys by default;
    ``computed=True`` adds the computed buffers, giving the original's full state dict).
    The two tied keys share the tensor of ``encoder.embed_tokens.weight``."""
    keys = official_keys(config, computed=computed)
    buffers = computed_buffers(config) if computed else {}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    embed = recipe_tensor(EMBED_KEY, keys[EMBED_KEY])
    for key, shape in keys.items():
        if key == EMBED_KEY or key in TIED_KEYS:
            out[key] = embed
        elif is_computed(key):
            out[key] = buffers[key]
        else:
            out[key] = recipe_tensor(key, shape)
    return out


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over ``key bytes + raw tensor bytes`` for all keys in sorted order (the digest
    ``weights.md`` quotes, when computed over a full official state dict)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode("utf-8"))
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
