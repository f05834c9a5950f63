"""The Hugging Face port's layout (OFA-Sys/OFA branch ``feature/add_transformers``): a folder with
``config.json`` and ``pytorch_model.bin`` and/or ``model.safetensors`` (or sharded versions with an
``*.index.json``).

We read it without ``transformers`` (the port was never merged into it, so there is no class to
import anyway): the key renames are one explicit table (:data:`HF_LAYER_RENAMES`), the config
fields another (:data:`HF_CONFIG_FIELDS`). ``pytorch_model.bin`` goes through the same safe
unpickler as official checkpoints.

HF config field names are those of the port's ``configuration_ofa.py`` (``d_model``,
``encoder_ffn_dim``, ``max_position_embeddings``, ``normformer``, ...). That file has no switch for
the per-head scales: its attention module always creates ``c_attn``, so ``scale_heads`` is read
from the presence of those keys. Fields of ours that the HF config lacks (``num_bins``,
``code_dict_size``, ``patch_image_size``, ``language``, ``unk``, ``scale_heads``, ``text_vocab``,
``location_embedding_init``, and ``config.extra``) are written by :func:`save_hf` as extra entries (``PretrainedConfig`` keeps unknown entries as attributes) and
read back when present.

Positions: the port's decoder adds its absolute position embeddings to its input only when
``entangle_position_embedding and not disable_entangle``, and ``entangle_position_embedding`` is
false in every port config, so a model read from the port has ``disable_entangle=True`` (the same
computation as the released fairseq files) and only such a model can be written in its layout.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch

from openofa.config import OFAConfig, ZH_VOCAB_SIZE
from openofa.errors import OFAError
from openofa.checkpoints.keys import (
    EMBED_KEY,
    TIED_KEYS,
    finalize_state_dict,
    infer_from_state_dict,
    official_keys,
    with_computed_buffers,
)
from openofa.checkpoints.safe_pickle import load_pt

# (stack, module name in the original, module name in the HF port) for the layer-internal
# modules that were renamed; every other key is identical in both, except that the HF port has
# no ``encoder.version`` / ``decoder.version`` buffers.
HF_LAYER_RENAMES: tuple[tuple[str, str, str], ...] = (
    ("encoder", "attn_ln", "self_attn_mid_layer_norm"),
    ("encoder", "ffn_layernorm", "ffn_layer_norm"),
    ("decoder", "self_attn_ln", "self_attn_mid_layer_norm"),
    ("decoder", "cross_attn_ln", "cross_attn_mid_layer_norm"),
    ("decoder", "ffn_layernorm", "ffn_layer_norm"),
    ("decoder", "encoder_attn", "cross_attn"),
    ("decoder", "encoder_attn_layer_norm", "cross_attn_layer_norm"),
)
_TO_HF = {(side, ours): hf for side, ours, hf in HF_LAYER_RENAMES}
_FROM_HF = {(side, hf): ours for side, ours, hf in HF_LAYER_RENAMES}
_LAYER_RE = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.([^.]+)(.*)$")
_NOT_IN_HF = ("encoder.version", "decoder.version")

# HF config.json field -> OFAConfig field(s) it sets
HF_CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size",),
    "d_model": ("encoder_embed_dim", "decoder_embed_dim"),
    "encoder_layers": ("encoder_layers",),
    "decoder_layers": ("decoder_layers",),
    "encoder_attention_heads": ("encoder_attention_heads",),
    "decoder_attention_heads": ("decoder_attention_heads",),
    "encoder_ffn_dim": ("encoder_ffn_embed_dim",),
    "decoder_ffn_dim": ("decoder_ffn_embed_dim",),
    "max_position_embeddings": ("max_source_positions", "max_target_positions"),
    "resnet_type": ("resnet_type",),
    "resnet_drop_path_rate": ("resnet_drop_path_rate",),
    "token_bucket_size": ("token_bucket_size",),
    "image_bucket_size": ("image_bucket_size",),
    "attn_scale_factor": ("attn_scale_factor",),
    "code_image_size": ("code_image_size",),
    "normformer": ("scale_attn", "scale_fc"),
    "dropout": ("dropout",),
    "attention_dropout": ("attention_dropout",),
    "activation_dropout": ("activation_dropout",),
    "encoder_drop_path_rate": ("encoder_drop_path_rate",),
    "decoder_drop_path_rate": ("decoder_drop_path_rate",),
    "pad_token_id": ("pad",),
    "bos_token_id": ("bos",),
    "eos_token_id": ("eos",),
}
# the port's constructor defaults, used for fields a config.json leaves out
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 59457, "d_model": 512, "encoder_layers": 4, "decoder_layers": 4,
    "encoder_attention_heads": 8, "decoder_attention_heads": 8, "encoder_ffn_dim": 2048,
    "decoder_ffn_dim": 2048, "max_position_embeddings": 1024, "resnet_type": "resnet101",
    "resnet_drop_path_rate": 0.0, "token_bucket_size": 256, "image_bucket_size": 42,
    "attn_scale_factor": 2.0, "code_image_size": 128, "normformer": True, "dropout": 0.1,
    "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_drop_path_rate": 0.0,
    "decoder_drop_path_rate": 0.0, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}
# our fields with no HF counterpart, stored as extra config.json entries (none changes what the
# port's model computes: vocabulary and preprocessing facts, a training-only initialisation)
OURS_EXTRA_FIELDS = ("unk", "num_bins", "code_dict_size", "patch_image_size", "language", "scale_heads",
                     "text_vocab", "location_embedding_init")
# the image trunks the port builds (all 64 planes wide)
HF_RESNETS = ("resnet50", "resnet101", "resnet152")
# HF settings our model implements only at these values (checked when present)
HF_REQUIRED = {
    "scale_embedding": False,
    "encoder_normalize_before": True,
    "decoder_normalize_before": True,
    "layernorm_embedding": True,
    "patch_layernorm_embedding": True,
    "code_layernorm_embedding": True,
    "add_type_embedding": True,
    "share_decoder_input_output_embed": True,
    "entangle_position_embedding": False,
    "activation_function": "gelu",
    "use_ofasys": False,
}

# the model's task settings (image size, mean/std, prompt type ...), an extra config.json entry
TASK_SETTINGS_ENTRY = "openofa_task_settings"
# the rest of config.extra, another extra entry
EXTRA_ENTRY = "openofa_extra"

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def to_hf_name(key: str) -> str:
    m = _LAYER_RE.match(key)
    if m and (m.group(1), m.group(3)) in _TO_HF:
        return f"{m.group(1)}.layers.{m.group(2)}.{_TO_HF[(m.group(1), m.group(3))]}{m.group(4)}"
    return key


def from_hf_name(key: str) -> str:
    m = _LAYER_RE.match(key)
    if m and (m.group(1), m.group(3)) in _FROM_HF:
        return f"{m.group(1)}.layers.{m.group(2)}.{_FROM_HF[(m.group(1), m.group(3))]}{m.group(4)}"
    return key


def hf_key_table(config: OFAConfig) -> "OrderedDict[str, str]":
    """Official name -> HF name for every key the HF port stores for ``config``."""
    return OrderedDict((k, to_hf_name(k)) for k in official_keys(config) if k not in _NOT_IN_HF)


def is_hf_config(data: Mapping[str, Any]) -> bool:
    """An OFA config of the HF port (``model_type`` "ofa", or no model_type but its field names)."""
    model_type = data.get("model_type")
    if model_type is not None:
        return model_type == "ofa"
    return "d_model" in data and "encoder_layers" in data and "resnet_type" in data


# ---- config -----------------------------------------------------------------------------------


def config_from_hf(data: Mapping[str, Any], notes: list[str], source: str) -> OFAConfig:
    """OFAConfig from an HF ``config.json`` mapping (port defaults for absent fields)."""
    bad = [f"{k}={data[k]!r}" for k, want in HF_REQUIRED.items() if k in data and data[k] != want]
    if bad:
        raise OFAError(f"{source}: unsupported setting(s) {', '.join(bad)}; only the released OFA variant is implemented")
    values = OFAConfig().to_dict()
    pairs = [(hf_name, data.get(hf_name, HF_DEFAULTS[hf_name]), ours) for hf_name, ours in HF_CONFIG_FIELDS.items()]
    pairs += [(field, data.get(field), (field,)) for field in OURS_EXTRA_FIELDS]
    for hf_name, value, ours in pairs:
        if value is None:
            continue
        for field in ours:
            try:
                values[field] = str(value) if values[field] is None else type(values[field])(value)
            except (TypeError, ValueError):
                raise OFAError(f"{source}: bad value {value!r} for {hf_name}") from None
    # the port's decoder adds its input positions only when `entangle_position_embedding and not
    # disable_entangle`; entangle_position_embedding must be false (above), so it never adds them
    values["disable_entangle"] = True
    if "language" not in data and values["vocab_size"] == ZH_VOCAB_SIZE:
        values["language"] = "zh"
        notes.append(f"vocabulary of {ZH_VOCAB_SIZE} rows: assumed the Chinese (BERT) vocabulary")
    try:
        return OFAConfig(**values)
    except OFAError as e:
        raise OFAError(f"{source}: {e}") from None


def cannot_represent(config: OFAConfig) -> str | None:
    """Why the port's layout cannot hold ``config`` (None when it can)."""
    c = config
    reasons = []
    if c.adapter or c.encoder_prompt or c.decoder_prompt:
        reasons.append("adapters or prefix tuning (the port has neither)")
    if c.resnet_type not in HF_RESNETS:
        reasons.append(f"resnet_type={c.resnet_type!r} (the port builds {', '.join(HF_RESNETS)})")
    if c.resnet_width != 64:
        reasons.append(f"resnet_width={c.resnet_width} (the port's trunk is 64 planes wide)")
    if c.scale_resids:
        reasons.append("scale_resids=True (the port has no w_resid)")
    if c.scale_attn != c.scale_fc:
        reasons.append(f"scale_attn={c.scale_attn} with scale_fc={c.scale_fc} (one 'normformer' switch for both)")
    if c.encoder_embed_dim != c.decoder_embed_dim:
        reasons.append("encoder_embed_dim != decoder_embed_dim (one d_model)")
    if c.max_source_positions != c.max_target_positions:
        reasons.append(f"max_source_positions={c.max_source_positions} with max_target_positions="
                       f"{c.max_target_positions} (one max_position_embeddings)")
    if not c.disable_entangle or c.entangle_position_embedding:
        reasons.append(f"disable_entangle={c.disable_entangle}, entangle_position_embedding="
                       f"{c.entangle_position_embedding} (the port adds no position embeddings to the "
                       "decoder's or encoder's input: disable_entangle must be true, entangle_position_embedding false)")
    if c.interpolate_position:
        reasons.append("interpolate_position=True (the port always reads its image positions at their own size)")
    try:
        json.dumps(c.extra)
    except (TypeError, ValueError) as e:
        reasons.append(f"config.extra is not JSON-serialisable ({e})")
    return "; ".join(reasons) or None


def config_to_hf(config: OFAConfig, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The HF ``config.json`` content for ``config`` (``dtype``: the weights' dtype)."""
    reason = cannot_represent(config)
    if reason:
        raise OFAError(f"the Hugging Face port's layout cannot hold this model: {reason}")
    c = config
    out: dict[str, Any] = {
        "architectures": ["OFAModel"],
        "model_type": "ofa",
        "vocab_size": c.vocab_size,
        "d_model": c.encoder_embed_dim,
        "encoder_layers": c.encoder_layers,
        "decoder_layers": c.decoder_layers,
        "encoder_attention_heads": c.encoder_attention_heads,
        "decoder_attention_heads": c.decoder_attention_heads,
        "encoder_ffn_dim": c.encoder_ffn_embed_dim,
        "decoder_ffn_dim": c.decoder_ffn_embed_dim,
        "max_position_embeddings": c.max_source_positions,
        "resnet_type": c.resnet_type,
        "resnet_drop_path_rate": c.resnet_drop_path_rate,
        "resnet_model_path": None,
        "token_bucket_size": c.token_bucket_size,
        "image_bucket_size": c.image_bucket_size,
        "attn_scale_factor": c.attn_scale_factor,
        "code_image_size": c.code_image_size,
        "normformer": c.scale_attn,
        "dropout": c.dropout,
        "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout,
        "encoder_drop_path_rate": c.encoder_drop_path_rate,
        "decoder_drop_path_rate": c.decoder_drop_path_rate,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        **{k: v for k, v in HF_REQUIRED.items() if k != "use_ofasys"},
        "disable_entangle": True,
        "pad_token_id": c.pad,
        "bos_token_id": c.bos,
        "eos_token_id": c.eos,
        "decoder_start_token_id": c.bos,
        "forced_eos_token_id": c.eos,
        "is_encoder_decoder": True,
        "use_cache": True,
        "torch_dtype": str(dtype).replace("torch.", ""),
    }
    for field in OURS_EXTRA_FIELDS:
        out[field] = getattr(c, field)
    if c.extra.get("task"):
        out[TASK_SETTINGS_ENTRY] = c.extra["task"]
    rest = {k: v for k, v in c.extra.items() if k != "task"}
    if rest:
        out[EXTRA_ENTRY] = rest
    return out


# ---- weights ----------------------------------------------------------------------------------


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise OFAError(f"{path}: cannot read safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    obj = load_pt(path)
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OFAError(f"{path}: expected a state dict (name -> tensor)")
    return dict(obj)


def read_hf_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of an HF folder (single file or shards; safetensors preferred)."""
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return read_weight_file(folder / name), name
    for name in HF_INDEX_FILES:
        index = folder / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise OFAError(f"{index}: not a valid shard index ({e})") from None
            tensors: dict[str, torch.Tensor] = {}
            for shard in dict.fromkeys(weight_map.values()):
                tensors.update(read_weight_file(folder / shard))
            return tensors, name
    raise OFAError(f"{folder}: no weights found (expected one of {', '.join(HF_WEIGHT_FILES + HF_INDEX_FILES)})")


def from_hf(
    hf_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], *, source: str = "HF checkpoint",
    keep_dtype: bool = False,
) -> tuple[OFAConfig, "OrderedDict[str, torch.Tensor]", dict]:
    """(config, state dict, meta) from an HF config mapping and HF-named tensors (float32 unless
    ``keep_dtype``); the extra entries we write (:data:`TASK_SETTINGS_ENTRY`, :data:`EXTRA_ENTRY`)
    come back in ``config.extra``."""
    notes: list[str] = []
    if tensors and all(k.startswith("model.") for k in tensors):
        tensors = {k[len("model."):]: v for k, v in tensors.items()}
    sd = OrderedDict((from_hf_name(k), v) for k, v in tensors.items())
    config = config_from_hf(hf_config, notes, source)
    inferred = infer_from_state_dict(sd)
    changes = {}
    stated = {"scale_attn": "normformer", "scale_fc": "normformer", "scale_heads": "scale_heads", "vocab_size": "vocab_size"}
    for name, hf_name in stated.items():
        if name in inferred and getattr(config, name) != inferred[name]:
            if hf_name in hf_config:
                notes.append(f"{hf_name}={hf_config[hf_name]!r} in config.json, but the tensors say {name}={inferred[name]}")
            changes[name] = inferred[name]
    extra = dict(hf_config[EXTRA_ENTRY]) if isinstance(hf_config.get(EXTRA_ENTRY), dict) else {}
    if isinstance(hf_config.get(TASK_SETTINGS_ENTRY), dict):
        extra["task"] = dict(hf_config[TASK_SETTINGS_ENTRY])
    if changes or extra:
        config = OFAConfig(**{**config.to_dict(), **changes, "extra": extra})
    state_dict = finalize_state_dict(config, sd, source=source, notes=notes, keep_dtype=keep_dtype)
    meta = {"format": "hf", "source": source, "ema": False, "notes": notes}
    if isinstance(hf_config.get(TASK_SETTINGS_ENTRY), dict):
        meta["task"] = dict(hf_config[TASK_SETTINGS_ENTRY])
    return config, state_dict, meta


def load_hf(folder: str | Path, *, keep_dtype: bool = False) -> tuple[OFAConfig, "OrderedDict[str, torch.Tensor]", dict]:
    """Read an HF-layout folder (float32 tensors unless ``keep_dtype``)."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    try:
        hf_config = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise OFAError(f"{folder}: no config.json") from None
    except json.JSONDecodeError as e:
        raise OFAError(f"{cfg_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(hf_config, dict) or not is_hf_config(hf_config):
        raise OFAError(f"{cfg_path}: not an OFA Hugging Face config (no model_type 'ofa')")
    tensors, weight_name = read_hf_weights(folder)
    config, sd, meta = from_hf(hf_config, tensors, source=str(folder / weight_name), keep_dtype=keep_dtype)
    meta["source"] = str(folder)
    meta["weights_file"] = weight_name
    return config, sd, meta


def hf_state_dict(config: OFAConfig, state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Our state dict renamed to the HF port's names, computed buffers included."""
    full = with_computed_buffers(
        config, finalize_state_dict(config, state_dict, source="state dict to save", keep_dtype=True))
    return OrderedDict((hf, full[ours]) for ours, hf in hf_key_table(config).items())


def save_hf(
    folder: str | Path, config: OFAConfig, state_dict: Mapping[str, torch.Tensor], *, weights: str = "bin"
) -> Path:
    """Write an HF-layout folder: ``config.json`` plus ``pytorch_model.bin`` (``weights="bin"``),
    ``model.safetensors`` (``"safetensors"``) or both (``"both"``). In the safetensors file the tied
    embedding is stored once, under ``encoder.embed_tokens.weight``, as recent ``transformers``
    versions do for tied weights."""
    if weights not in ("bin", "safetensors", "both"):
        raise OFAError(f"weights must be 'bin', 'safetensors' or 'both', not {weights!r}")
    config_to_hf(config)  # refuses a model the layout cannot hold before the tensors are touched
    tensors = hf_state_dict(config, state_dict)
    hf_config = config_to_hf(config, tensors[EMBED_KEY].dtype)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if weights in ("bin", "both"):
        from openofa.checkpoints.official import atomic_torch_save

        atomic_torch_save(tensors, folder / "pytorch_model.bin")
    if weights in ("safetensors", "both"):
        from openofa.checkpoints.ours import write_safetensors

        single = {k: v.contiguous() for k, v in tensors.items() if k not in TIED_KEYS}
        assert EMBED_KEY in single
        write_safetensors(single, folder / "model.safetensors", {"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return folder
