"""MuE early exit at inference ("You Need Multiple Exiting", Tang et al. 2022; the original's
``feature/MuE`` branch): a stack of layers stops as soon as a layer barely changes its input.

The rule, for the encoder and for each decoding step of the decoder alike: after layer ``i`` the
cosine similarity between its output and its input, each flattened over the *whole batch* into one
vector, is compared with a threshold; if it is larger, the remaining layers are skipped and the
layer's output goes on to the final layer norm (and, in the decoder, the output projection) as if
it came from the last layer. One decision per batch, so every row runs the same layers (the
batch stays one tensor; the outcome can depend on what else is in the batch).

The decoder's threshold follows the original's schedule over the generation steps: no exit during
the first third of ``max_len + 1`` steps, then ``0.9 * T + 0.1 * exp(-(step + 1) / (max_len + 1))``.
The encoder uses ``T`` as given. The original runs image and text through separate encoder stacks
(a MuE-trained architecture) with thresholds ``img_thres`` and ``txt_thres``; our encoder is the
plain OFA joint stack, so one encoder threshold covers both.

KV cache: a decoder layer skipped at step t has no keys/values for position t, which later steps
attend to. Here the skipped layers take the exit layer's output as their input: each computes its
own keys/values for position t from that hidden state (its self-attention layer norm and key/value
projection, a small part of a layer). This is the premise of the criterion (a layer that changes
its input little is close to the identity) and keeps every layer's cache one entry per position.
The original's code instead meant to overwrite the skipped layers' self- and cross-attention
buffers with the exit layer's (a path that its layers only take when traced for ONNX).

Training is unchanged. The original fine-tunes MuE models with a loss on every decoder layer's
output (through the final layer norm and output projection) so that early layers predict well;
the rule works on any model, and pays off most on models trained that way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from openofa.errors import OFAError


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors, each flattened into one vector, in float32."""
    a = a.reshape(-1).float()
    b = b.reshape(-1).float()
    denom = a.norm() * b.norm()
    if float(denom) == 0.0:
        return 0.0
    return float(a @ b / denom)


def decoder_threshold(threshold: float, step: int, max_len: int) -> float:
    """The original's decoder threshold at generation ``step`` (0 = the first token after BOS):
    1 (never exit) for ``step < (max_len + 1) / 3``, then a slight decay towards ``0.9 * threshold``."""
    n = max_len + 1
    if step < n / 3:
        return 1.0
    return 0.9 * threshold + 0.1 * math.exp(-(step + 1) / n)


def check_threshold(value, what: str = "early exit threshold") -> float | None:
    if value is None:
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise OFAError(f"{what} must be a number in (0, 1], got {value!r}") from None
    if not 0.0 < t <= 1.0 or math.isnan(t):
        raise OFAError(f"{what} must be a number in (0, 1] (1 never exits), got {value!r}")
    return t


@dataclass
class ExitRule:
    """One stack's threshold and a count of the layers it ran (``runs``: forward calls,
    ``layers``: layers run over those calls)."""

    threshold: float
    decoder: bool = False
    runs: int = 0
    layers: int = 0
    exits: dict = field(default_factory=dict)  # layer count -> how many calls stopped there

    def exit_after(self, out: torch.Tensor, inp: torch.Tensor, step: int = 0, max_len: int | None = None) -> bool:
        t = self.threshold
        if self.decoder and max_len is not None:
            t = decoder_threshold(t, step, max_len)
        return t < 1.0 and cosine(out, inp) > t

    def record(self, layers_run: int) -> None:
        self.runs += 1
        self.layers += layers_run
        self.exits[layers_run] = self.exits.get(layers_run, 0) + 1

    def reset(self) -> None:
        self.runs = self.layers = 0
        self.exits = {}

    @property
    def mean_layers(self) -> float:
        return self.layers / self.runs if self.runs else 0.0


def fill_skipped_cache(layers, x: torch.Tensor, caches) -> None:
    """Keys/values of the decoder ``layers`` skipped at this step, computed from the exit layer's
    output ``x`` (N, 1, C) as their input, appended to their ``caches``."""
    for layer, kv in zip(layers, caches):
        k, v = layer.self_attn.project_kv(layer.self_attn_layer_norm(x))
        kv.update(k, v)


def parse(value) -> tuple[float | None, float | None]:
    """``early_exit`` as given to the API/CLI: None, one threshold for both stacks, a pair
    (encoder, decoder) where None leaves that stack whole, or the text ``"T"`` / ``"E,D"``."""
    if value is None:
        return None, None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) == 1:
            t = check_threshold(parts[0])
            return t, t
        if len(parts) == 2:
            return tuple(None if p.lower() in ("", "none", "off") else check_threshold(p) for p in parts)
        raise OFAError(f"early exit: give T or ENCODER,DECODER thresholds, got {value!r}")
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise OFAError(f"early exit: give one threshold or an (encoder, decoder) pair, got {value!r}")
        return check_threshold(value[0], "encoder early exit threshold"), \
            check_threshold(value[1], "decoder early exit threshold")
    t = check_threshold(value)
    return t, t


def set_early_exit(model, value) -> "tuple[ExitRule | None, ExitRule | None]":
    """Turn the exit rule on (or off with None) for ``model`` (an :class:`OFAModel`); returns the
    encoder's and the decoder's :class:`ExitRule` (None where a stack runs whole)."""
    enc_t, dec_t = parse(value)
    model.encoder.exit_rule = None if enc_t is None else ExitRule(enc_t)
    model.decoder.exit_rule = None if dec_t is None else ExitRule(dec_t, decoder=True)
    return model.encoder.exit_rule, model.decoder.exit_rule
