"""The official state-dict key list of any :class:`OFAConfig`, the computed index buffers, and the
one routine every loader and saver uses to check a state dict against a config.

The key names are the original's (``encoder.layers.0.self_attn.q_proj.weight``...). They are
generated here from the config rather than read from a table because a checkpoint may have any
size; ``tests/checkpoints/test_recipe.py`` checks the result against the reference key lists of
all five published sizes.

Three kinds of keys need care:

* computed buffers (``*.version``, ``*.token_rp_bucket``, ``*.image_rp_bucket``,
  ``decoder.image_position_idx``): index tables the original's constructors compute. Official
  files contain them, our model recomputes them and leaves them out of its state dict;
* tied keys: ``decoder.embed_tokens.weight`` and ``decoder.output_projection.weight`` are the
  same tensor as ``encoder.embed_tokens.weight``;
* everything else: real parameters and BatchNorm statistics.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Iterable, Mapping

import torch

from openofa.config import RESNET_LAYERS, OFAConfig
from openofa.errors import OFAError

Shape = tuple[int, ...]

EMBED_KEY = "encoder.embed_tokens.weight"
TIED_KEYS = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")
COMPUTED_SUFFIXES = ("version", "token_rp_bucket", "image_rp_bucket", "image_position_idx")
INT64_SUFFIXES = ("num_batches_tracked", "token_rp_bucket", "image_rp_bucket", "image_position_idx")

# The original builds the text relative-position table for this many positions, whatever
# max_source_positions says (make_token_bucket_position's default argument).
_TOKEN_BUCKET_MAX_POSITION = 1024


def is_computed(key: str) -> bool:
    """True for the index buffers the constructors compute (not learned, not stored by us)."""
    return key.rsplit(".", 1)[-1] in COMPUTED_SUFFIXES


def key_dtype(key: str) -> torch.dtype:
    """dtype of an official key: int64 for counters and index tables, float32 otherwise."""
    return torch.int64 if key.rsplit(".", 1)[-1] in INT64_SUFFIXES else torch.float32


# ---- key generation ---------------------------------------------------------------------------


def _linear(prefix: str, out_f: int, in_f: int, bias: bool = True) -> list[tuple[str, Shape]]:
    out = [(f"{prefix}.weight", (out_f, in_f))]
    if bias:
        out.append((f"{prefix}.bias", (out_f,)))
    return out


def _norm(prefix: str, dim: int) -> list[tuple[str, Shape]]:
    return [(f"{prefix}.weight", (dim,)), (f"{prefix}.bias", (dim,))]


def _batchnorm(prefix: str, dim: int) -> list[tuple[str, Shape]]:
    return _norm(prefix, dim) + [
        (f"{prefix}.running_mean", (dim,)),
        (f"{prefix}.running_var", (dim,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def _resnet(prefix: str, blocks: Iterable[int], width: int = 64) -> list[tuple[str, Shape]]:
    out = [(f"{prefix}.conv1.weight", (width, 3, 7, 7))] + _batchnorm(f"{prefix}.bn1", width)
    inplanes = width
    for stage, (planes, count) in enumerate(zip((width, 2 * width, 4 * width), blocks), start=1):
        for b in range(count):
            p = f"{prefix}.layer{stage}.{b}"
            out.append((f"{p}.conv1.weight", (planes, inplanes, 1, 1)))
            out += _batchnorm(f"{p}.bn1", planes)
            out.append((f"{p}.conv2.weight", (planes, planes, 3, 3)))
            out += _batchnorm(f"{p}.bn2", planes)
            out.append((f"{p}.conv3.weight", (planes * 4, planes, 1, 1)))
            out += _batchnorm(f"{p}.bn3", planes * 4)
            if b == 0:  # every stage changes the width (64 -> 256, 256 -> 512, 512 -> 1024)
                out.append((f"{p}.downsample.0.weight", (planes * 4, inplanes, 1, 1)))
                out += _batchnorm(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return out


def _attention(prefix: str, dim: int, heads: int, scale_heads: bool) -> list[tuple[str, Shape]]:
    out: list[tuple[str, Shape]] = [(f"{prefix}.c_attn", (heads,))] if scale_heads else []
    for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
        out += _linear(f"{prefix}.{proj}", dim, dim)
    return out


def _adapter(p: str, c: OFAConfig) -> list[tuple[str, Shape]]:
    """The original builds a layer's adapter first, so its keys lead the layer's."""
    if not c.adapter:
        return []
    out: list[tuple[str, Shape]] = []
    for name in ("adapter", "attn_adapter") if c.attn_adapter else ("adapter",):
        if c.adapter_experts:  # π-Tuning's experts (openofa's names; not a layout of the original)
            for k in range(c.adapter_experts):
                out += _linear(f"{p}.{name}.experts.{k}.down_proj", c.adapter_dim, c.embed_dim) + _linear(
                    f"{p}.{name}.experts.{k}.up_proj", c.embed_dim, c.adapter_dim)
            out.append((f"{p}.{name}.interpolation_weight", (c.adapter_experts,)))
        else:
            out += _linear(f"{p}.{name}.down_proj", c.adapter_dim, c.embed_dim) + _linear(
                f"{p}.{name}.up_proj", c.embed_dim, c.adapter_dim)
    return out


def _prompt_encoder(side: str, c: OFAConfig) -> list[tuple[str, Shape]]:
    if not getattr(c, f"{side}_prompt"):
        return []
    p, dim = f"{side}.{side}_prompt_encoder", c.embed_dim
    length, width = getattr(c, f"{side}_prompt_length"), getattr(c, f"{side}_layers") * 2 * dim
    if not getattr(c, f"{side}_prompt_projection"):
        return [(f"{p}.embedding.weight", (length, width))]
    hidden = getattr(c, f"{side}_prompt_dim") or 2 * dim
    return [(f"{p}.embedding.weight", (length, dim))] + _linear(f"{p}.trans.0", hidden, dim) + _linear(
        f"{p}.trans.2", width, hidden)


def _encoder_layer(p: str, c: OFAConfig) -> list[tuple[str, Shape]]:
    dim, ffn = c.encoder_embed_dim, c.encoder_ffn_embed_dim
    out: list[tuple[str, Shape]] = _adapter(p, c)
    out += [(f"{p}.w_resid", (dim,))] if c.scale_resids else []
    out += _attention(f"{p}.self_attn", dim, c.encoder_attention_heads, c.scale_heads)
    out += _norm(f"{p}.self_attn_layer_norm", dim)
    out += _linear(f"{p}.fc1", ffn, dim) + _linear(f"{p}.fc2", dim, ffn)
    if c.scale_attn:
        out += _norm(f"{p}.attn_ln", dim)
    if c.scale_fc:
        out += _norm(f"{p}.ffn_layernorm", ffn)
    out += _norm(f"{p}.final_layer_norm", dim)
    return out


def _decoder_layer(p: str, c: OFAConfig) -> list[tuple[str, Shape]]:
    dim, ffn, heads = c.decoder_embed_dim, c.decoder_ffn_embed_dim, c.decoder_attention_heads
    out: list[tuple[str, Shape]] = _adapter(p, c)
    out += [(f"{p}.w_resid", (dim,))] if c.scale_resids else []
    out += _attention(f"{p}.self_attn", dim, heads, c.scale_heads)
    if c.scale_attn:
        out += _norm(f"{p}.self_attn_ln", dim) + _norm(f"{p}.cross_attn_ln", dim)
    out += _norm(f"{p}.self_attn_layer_norm", dim)
    out += _attention(f"{p}.encoder_attn", dim, heads, c.scale_heads)
    out += _norm(f"{p}.encoder_attn_layer_norm", dim)
    if c.scale_fc:
        out += _norm(f"{p}.ffn_layernorm", ffn)
    out += _linear(f"{p}.fc1", ffn, dim) + _linear(f"{p}.fc2", dim, ffn)
    out += _norm(f"{p}.final_layer_norm", dim)
    return out


def _rel_tables(side: str, layers: int, heads: int, c: OFAConfig) -> list[tuple[str, Shape]]:
    token_rows = 2 * c.token_bucket_size - 1
    image_rows = (2 * c.image_bucket_size - 1) ** 2 + 3
    out = [(f"{side}.token_rel_pos_table_list.{i}.weight", (token_rows, heads)) for i in range(layers)]
    out += [(f"{side}.image_rel_pos_table_list.{i}.weight", (image_rows, heads)) for i in range(layers)]
    return out


def _buffer_shapes(c: OFAConfig) -> dict[str, Shape]:
    n = _TOKEN_BUCKET_MAX_POSITION
    m = c.image_bucket_size**2 + 1
    window = c.code_image_size // 8
    return {
        "version": (1,),
        "token_rp_bucket": (n, n),
        "image_rp_bucket": (m, m),
        "image_position_idx": (1 + window * window + 769,),
    }


@functools.lru_cache(maxsize=16)
def _official_keys_cached(items: tuple) -> tuple[tuple[str, Shape], ...]:
    c = OFAConfig(**dict(items))
    dim = c.encoder_embed_dim
    buf = _buffer_shapes(c)
    image_positions = c.image_bucket_size**2 + 1
    enc: list[tuple[str, Shape]] = [(f"encoder.{b}", buf[b]) for b in ("version", "token_rp_bucket", "image_rp_bucket")]
    enc += _prompt_encoder("encoder", c)
    enc.append((EMBED_KEY, (c.vocab_size, dim)))
    enc += _norm("encoder.layernorm_embedding", dim)
    enc.append(("encoder.type_embedding.weight", (2, dim)))
    enc += _resnet("encoder.embed_images", c.resnet_layers, c.resnet_width)
    enc += _linear("encoder.image_proj", dim, 16 * c.resnet_width)
    enc += _norm("encoder.patch_layernorm_embedding", dim)
    enc.append(("encoder.embed_positions.weight", (c.max_source_positions + 2, dim)))
    enc.append(("encoder.embed_image_positions.weight", (image_positions, dim)))
    enc += _norm("encoder.pos_ln", dim) + _norm("encoder.image_pos_ln", dim)
    enc += _linear("encoder.pos_q_linear", dim, dim) + _linear("encoder.pos_k_linear", dim, dim)
    for i in range(c.encoder_layers):
        enc += _encoder_layer(f"encoder.layers.{i}", c)
    enc += _norm("encoder.layer_norm", dim)
    enc += _rel_tables("encoder", c.encoder_layers, c.encoder_attention_heads, c)

    ddim = c.decoder_embed_dim
    dec: list[tuple[str, Shape]] = [(f"decoder.{b}", buf[b]) for b in buf]
    dec += _prompt_encoder("decoder", c)
    dec.append(("decoder.embed_tokens.weight", (c.vocab_size, ddim)))
    dec += _norm("decoder.layernorm_embedding", ddim)
    dec.append(("decoder.embed_positions.weight", (c.max_target_positions + 2, ddim)))
    dec.append(("decoder.embed_image_positions.weight", (image_positions, ddim)))
    dec += _norm("decoder.pos_ln", ddim) + _norm("decoder.image_pos_ln", ddim)
    for name in ("self_pos_q_linear", "self_pos_k_linear", "cross_pos_q_linear", "cross_pos_k_linear"):
        dec += _linear(f"decoder.{name}", ddim, ddim)
    dec += _norm("decoder.code_layernorm_embedding", ddim)
    for i in range(c.decoder_layers):
        dec += _decoder_layer(f"decoder.layers.{i}", c)
    dec += _norm("decoder.layer_norm", ddim)
    dec.append(("decoder.output_projection.weight", (c.vocab_size, ddim)))
    dec += _rel_tables("decoder", c.decoder_layers, c.decoder_attention_heads, c)
    return tuple(enc + dec)


def _config_items(config: OFAConfig) -> tuple:
    d = config.to_dict()
    d.pop("extra", None)  # not hashable and irrelevant to the key set
    return tuple(sorted(d.items()))


def official_keys(config: OFAConfig, *, computed: bool = True) -> "OrderedDict[str, Shape]":
    """Every key of the original's ``model.state_dict()`` for ``config`` -> its shape, in the
    original's order. ``computed=False`` leaves out the computed buffers (= our model's keys)."""
    return OrderedDict((k, s) for k, s in _official_keys_cached(_config_items(config)) if computed or not is_computed(k))


# ---- computed buffers -------------------------------------------------------------------------


def token_bucket_positions(bucket_size: int, max_position: int = _TOKEN_BUCKET_MAX_POSITION) -> torch.Tensor:
    """Relative-position bucket of every (query, key) text pair, as the original's encoder and
    decoder constructors compute it: exact within ``bucket_size // 2``, log-spaced beyond, then
    shifted to start at 0. The float32 arithmetic matches the original step for step so that the
    rounding at bucket edges is identical."""
    pos = torch.arange(max_position, dtype=torch.long)
    rel = pos[:, None] - pos[None, :]
    mid = bucket_size // 2
    near = (rel < mid) & (rel > -mid)
    dist = torch.where(near, torch.full_like(rel, mid - 1), rel.abs())
    scaled = torch.log(dist / mid) / math.log((max_position - 1) / mid) * (mid - 1)
    log_bucket = (torch.ceil(scaled) + mid).int()
    bucket = torch.where(dist.le(mid), rel, log_bucket * torch.sign(rel)).long()
    return bucket + bucket_size - 1


def image_bucket_positions(bucket_size: int) -> torch.Tensor:
    """Index into the image relative-position table for every pair of image positions
    (row/column 0 is the unused position id 0 and points at the three extra table rows)."""
    rows = (2 * bucket_size - 1) ** 2 + 3
    r, c = torch.meshgrid(torch.arange(bucket_size), torch.arange(bucket_size), indexing="ij")
    r, c = r.flatten(), c.flatten()
    dr = r[:, None] - r[None, :] + bucket_size - 1
    dc = c[:, None] - c[None, :] + bucket_size - 1
    n = bucket_size * bucket_size + 1
    out = torch.zeros((n, n), dtype=torch.long)
    out[1:, 1:] = dr * (2 * bucket_size - 1) + dc
    out[0, :] = rows - 3
    out[:, 0] = rows - 2
    out[0, 0] = rows - 1
    return out


def decoder_image_position_idx(code_image_size: int, image_bucket_size: int) -> torch.Tensor:
    """The decoder's image-code position ids: 0, then the ids of a (code_image_size // 8)^2 grid
    laid out on the image_bucket_size-wide table, then 769 entries of 1024 (a fixed tail the
    original appends)."""
    w = code_image_size // 8
    grid = torch.arange(w)[None, :] + torch.arange(w)[:, None] * image_bucket_size + 1
    return torch.cat([torch.tensor([0]), grid.flatten(), torch.full((769,), 1024, dtype=torch.long)])


@functools.lru_cache(maxsize=4)
def _buffers_cached(token_bucket_size: int, image_bucket_size: int, code_image_size: int) -> tuple:
    return (
        token_bucket_positions(token_bucket_size),
        image_bucket_positions(image_bucket_size),
        decoder_image_position_idx(code_image_size, image_bucket_size),
    )


def computed_buffers(config: OFAConfig) -> "OrderedDict[str, torch.Tensor]":
    """The seven computed buffers of an official state dict (fresh tensors, safe to modify)."""
    tok, img, idx = _buffers_cached(config.token_bucket_size, config.image_bucket_size, config.code_image_size)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for side in ("encoder", "decoder"):
        out[f"{side}.version"] = torch.tensor([3.0])
        out[f"{side}.token_rp_bucket"] = tok.clone()
        out[f"{side}.image_rp_bucket"] = img.clone()
    out["decoder.image_position_idx"] = idx.clone()
    return out


def with_computed_buffers(config: OFAConfig, state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """``state_dict`` plus the computed buffers, in the original's key order."""
    full = dict(state_dict)
    full.update(computed_buffers(config))
    return OrderedDict((k, full[k]) for k in official_keys(config) if k in full)


# ---- checking a state dict against a config ---------------------------------------------------


def _first(names: Iterable[str], n: int = 5) -> str:
    names = list(names)
    shown = ", ".join(names[:n])
    return shown + (f" ... ({len(names)} in all)" if len(names) > n else "")


def _check_computed(config: OFAConfig, key: str, value: torch.Tensor, source: str) -> None:
    """A stored computed buffer must equal what we recompute, except the two the original itself
    ignores or overwrites on load (``version``, ``decoder.image_position_idx``)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf not in ("token_rp_bucket", "image_rp_bucket"):
        return
    expected = computed_buffers(config)[key]
    if tuple(value.shape) != tuple(expected.shape) or not torch.equal(value.long(), expected):
        raise OFAError(
            f"{source}: stored {key} {tuple(value.shape)} differs from the table computed for "
            f"token_bucket_size={config.token_bucket_size}, image_bucket_size={config.image_bucket_size}"
        )


def finalize_state_dict(
    config: OFAConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "state dict",
    notes: list[str] | None = None,
    check_computed: bool = True,
    keep_dtype: bool = False,
) -> "OrderedDict[str, torch.Tensor]":
    """Bring a state dict with official names into our canonical form, or fail.

    Computed buffers are checked (when present) and dropped; missing tied keys are filled from
    ``encoder.embed_tokens.weight`` and present ones must hold the same values; tensors are
    detached and moved to the CPU, floating ones become float32 (``keep_dtype=True``: they keep
    their dtype, as the format writers and the registry's readers need); the key set and every shape
    must be exactly those of ``config``. The result is in the original's key order with the
    three tied keys sharing one tensor.
    """
    notes = notes if notes is not None else []
    sd: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise OFAError(f"{source}: value of {k} is a {type(v).__name__}, not a tensor")
        if is_computed(k):
            if check_computed:
                _check_computed(config, k, v, source)
            continue
        sd[k] = v

    embed = sd.get(EMBED_KEY)
    if embed is None:
        for k in TIED_KEYS:  # only a decoder copy survived: it is the shared matrix
            if k in sd:
                embed = sd[EMBED_KEY] = sd[k]
                break
    if embed is not None:
        for k in TIED_KEYS:
            other = sd.get(k)
            if other is not None and other is not embed:
                same_memory = (
                    other.shape == embed.shape
                    and other.stride() == embed.stride()
                    and other.dtype == embed.dtype
                    and other.data_ptr() == embed.data_ptr()
                )
                if not same_memory and (other.shape != embed.shape or not torch.equal(other, embed)):
                    raise OFAError(f"{source}: {k} differs from {EMBED_KEY}; OFA ties these embeddings")
            sd[k] = embed

    expected = official_keys(config, computed=False)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected {_first(unexpected)}")
        raise OFAError(f"{source}: state dict does not match the config: " + "; ".join(parts))
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {s})" for k, s in expected.items() if tuple(sd[k].shape) != s]
    if wrong:
        raise OFAError(f"{source}: wrong shapes: {_first(wrong, 3)}")

    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    cast: set[str] = set()
    converted: dict[int, torch.Tensor] = {}
    for k in expected:
        v = sd[k]
        if id(v) in converted:  # keep tied keys tied after the cast
            out[k] = converted[id(v)]
            continue
        new = v.detach().cpu()
        if new.is_floating_point() and new.dtype != torch.float32 and not keep_dtype:
            cast.add(str(new.dtype).replace("torch.", ""))
            new = new.float()
        elif key_dtype(k) == torch.int64 and new.dtype != torch.int64:
            new = new.long()
        converted[id(v)] = new
        out[k] = new
    if cast:
        notes.append(f"cast {', '.join(sorted(cast))} tensors to float32")
    return out


def as_float32(state_dict: Mapping[str, torch.Tensor], notes: list[str] | None = None) -> "OrderedDict[str, torch.Tensor]":
    """``state_dict`` with its floating tensors in float32 (tied keys stay one tensor); the cast
    dtypes are recorded in ``notes``."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    converted: dict[int, torch.Tensor] = {}
    cast: set[str] = set()
    for k, v in state_dict.items():
        if id(v) not in converted:
            if v.is_floating_point() and v.dtype != torch.float32:
                cast.add(str(v.dtype).replace("torch.", ""))
                converted[id(v)] = v.float()
            else:
                converted[id(v)] = v
        out[k] = converted[id(v)]
    if cast and notes is not None:
        notes.append(f"cast {', '.join(sorted(cast))} tensors to float32")
    return out


# ---- reading hyperparameters back from the tensors --------------------------------------------

_RESNET_BY_BLOCKS = {blocks: name for name, blocks in RESNET_LAYERS.items()}


def _count(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of consecutive indices i with some key starting ``prefix + str(i) + '.'``."""
    present = set()
    for k in sd:
        if k.startswith(prefix):
            head = k[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                present.add(int(head))
    n = 0
    while n in present:
        n += 1
    return n


def infer_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """OFAConfig field values that the tensors themselves determine (official key names).

    Only what is actually present is returned; callers merge it with the stored hyperparameters.
    The flags ``scale_attn`` / ``scale_fc`` / ``scale_heads`` / ``scale_resids`` are always
    returned, read from the presence of their keys.
    """
    out: dict = {
        "scale_attn": any(k.endswith((".attn_ln.weight", ".self_attn_ln.weight")) for k in sd),
        "scale_fc": any(".ffn_layernorm." in k for k in sd),
        "scale_heads": any(k.endswith(".c_attn") for k in sd),
        "scale_resids": any(k.endswith(".w_resid") for k in sd),
    }

    def shape(key: str) -> tuple[int, ...] | None:
        v = sd.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    emb = shape(EMBED_KEY) or shape("decoder.embed_tokens.weight")
    if emb and len(emb) == 2:
        out["vocab_size"] = emb[0]
        out["encoder_embed_dim"] = out["decoder_embed_dim"] = emb[1]
    for side in ("encoder", "decoder"):
        n = _count(sd, f"{side}.layers.")
        if n:
            out[f"{side}_layers"] = n
        fc1 = shape(f"{side}.layers.0.fc1.weight")
        if fc1:
            out[f"{side}_ffn_embed_dim"] = fc1[0]
        table = shape(f"{side}.token_rel_pos_table_list.0.weight")
        if table:
            out[f"{side}_attention_heads"] = table[1]
            out["token_bucket_size"] = (table[0] + 1) // 2
        pos = shape(f"{side}.embed_positions.weight")
        if pos:
            out["max_source_positions" if side == "encoder" else "max_target_positions"] = pos[0] - 2
    image_pos = shape("encoder.embed_image_positions.weight")
    if image_pos:
        out["image_bucket_size"] = math.isqrt(max(image_pos[0] - 1, 0))
    blocks = tuple(_count(sd, f"encoder.embed_images.layer{i}.") for i in (1, 2, 3))
    if blocks in _RESNET_BY_BLOCKS:
        out["resnet_type"] = _RESNET_BY_BLOCKS[blocks]
    stem = shape("encoder.embed_images.conv1.weight")
    if stem:
        out["resnet_width"] = stem[0]
    idx = shape("decoder.image_position_idx")
    if idx and idx[0] > 770:
        window = math.isqrt(idx[0] - 770)
        if window * window == idx[0] - 770:
            out["code_image_size"] = window * 8
    return out
