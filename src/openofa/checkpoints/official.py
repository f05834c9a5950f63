"""Official (fairseq) OFA checkpoints: a ``torch.save`` of the trainer state.

Reading: only ``model`` (or ``extra_state['ema']``) and the hyperparameters (``cfg['model']`` /
``cfg['task']``, or ``vars(args)`` in old files) are used; optimizer state and metrics are ignored.
We do this by hand instead of through fairseq's ``load_checkpoint_to_cpu`` +
``upgrade_state_dict_named`` because those need fairseq/omegaconf, run arbitrary pickles, and
silently fill missing keys with freshly initialised tensors; here a checkpoint that does not match
its config is an error.

Writing (:func:`save_official`) produces the same layout, including the computed index buffers
the original's constructors create, so the original code (or this loader) can read it back. What
the original's ``cfg`` has no argument for but changes no tensor (``location_embedding_init``,
``text_vocab``, ``config.extra``) goes into a top-level ``openofa`` entry; a model the original
cannot build (another image trunk, other special token ids) is refused (:func:`cannot_represent`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch

from openofa.config import OFAConfig, ZH_VOCAB_SIZE, get_config
from openofa.errors import OFAError
from openofa.checkpoints.keys import (
    EMBED_KEY,
    finalize_state_dict,
    infer_from_state_dict,
    with_computed_buffers,
)
from openofa.checkpoints.safe_pickle import load_pt, to_plain
from openofa.checkpoints.settings import check_required, task_settings

# task-config fields that describe the checkpoint (the rest of cfg['task'] is data/training setup)
_TASK_FIELDS = ("patch_image_size", "orig_patch_image_size", "num_bins", "code_dict_size", "bpe", "bpe_dir")

_OLD_LAYER_NORMS = {
    "encoder": {"0": "self_attn_layer_norm", "1": "final_layer_norm"},
    "decoder": {"0": "self_attn_layer_norm", "1": "encoder_attn_layer_norm", "2": "final_layer_norm"},
}
_OLD_NORM_RE = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.layer_norms\.(\d+)\.(weight|bias)$")


# ---- reading ----------------------------------------------------------------------------------


def _looks_like_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) for k in obj) and any(
        k.startswith(("encoder.", "decoder.")) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def upgrade_old_names(sd: Mapping[str, torch.Tensor], notes: list[str]) -> "OrderedDict[str, torch.Tensor]":
    """Rename what very old fairseq checkpoints call differently (``layer_norms.N``, fused
    ``in_proj_weight``/``in_proj_bias``) and drop classification heads (recorded in ``notes``)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    heads: set[str] = set()
    renamed = split = 0
    for k, v in sd.items():
        if k.startswith("classification_heads."):
            heads.add(k.split(".")[1])
            continue
        m = _OLD_NORM_RE.match(k)
        if m and m.group(3) in _OLD_LAYER_NORMS[m.group(1)]:
            side, i, n, leaf = m.groups()
            out[f"{side}.layers.{i}.{_OLD_LAYER_NORMS[side][n]}.{leaf}"] = v
            renamed += 1
            continue
        if k.endswith((".in_proj_weight", ".in_proj_bias")):
            prefix, leaf = k.rsplit(".in_proj_", 1)
            if v.shape[0] % 3:
                raise OFAError(f"fused attention tensor {k} has {v.shape[0]} rows, not a multiple of 3")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"{prefix}.{name}.{leaf}"] = part
            split += 1
            continue
        out[k] = v
    if heads:
        notes.append(f"dropped classification head(s) {', '.join(sorted(heads))} (not part of the seq2seq model)")
    if renamed:
        notes.append(f"renamed {renamed} old layer_norms.N tensors")
    if split:
        notes.append(f"split {split} fused in_proj tensors into q/k/v")
    return out


def _hyperparameters(ckpt: Mapping) -> tuple[dict, dict, str]:
    """(model hyperparameters, task fields, where they came from) of a checkpoint dict."""
    cfg = to_plain(ckpt.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model = dict(cfg["model"])
        task = cfg.get("task") if isinstance(cfg.get("task"), dict) else {}
        if "bpe" not in task and isinstance(cfg.get("bpe"), dict):
            task = {**task, "bpe": cfg["bpe"].get("_name")}
        return model, dict(task), "cfg"
    args = to_plain(ckpt.get("args"))
    if isinstance(args, dict) and args:
        return dict(args), dict(args), "args"
    return {}, {}, "none"


def config_from_hyperparameters(
    model_cfg: Mapping, task_cfg: Mapping, inferred: Mapping, notes: list[str], source: str
) -> OFAConfig:
    """OFAConfig from stored hyperparameters plus what the tensors say.

    Vocabulary size and the normformer flags always come from the tensors. With no stored
    hyperparameters at all (a bare state dict) every shape-determined field comes from the tensors.
    """
    check_required(model_cfg, source)
    mapping = dict(model_cfg)
    for name in _TASK_FIELDS:
        if task_cfg.get(name) is not None:
            mapping[name] = task_cfg[name]
    mapping.pop("language", None)
    try:
        if mapping:
            config = OFAConfig.from_original(mapping)
            always = ("vocab_size", "scale_attn", "scale_fc", "scale_heads", "scale_resids")
        else:
            notes.append("no hyperparameters stored; architecture read from tensor shapes")
            config = OFAConfig()
            always = tuple(inferred)
        values = config.to_dict()
        for name in always:
            if name in inferred:
                if mapping and name.startswith("scale_") and name in mapping and bool(mapping[name]) != inferred[name]:
                    notes.append(f"{name}={mapping[name]!r} in the stored config, but the tensors say {inferred[name]}")
                values[name] = inferred[name]
        if "bpe" not in mapping and "bpe_dir" not in mapping and values["vocab_size"] == ZH_VOCAB_SIZE:
            values["language"] = "zh"
            notes.append(f"vocabulary of {ZH_VOCAB_SIZE} rows: assumed the Chinese (BERT) vocabulary")
        return OFAConfig(**values)
    except OFAError as e:
        raise OFAError(f"{source}: {e}") from None
    except (TypeError, ValueError) as e:
        raise OFAError(f"{source}: bad hyperparameter value ({e})") from None


def evaluated_with_ema(ckpt: Mapping) -> bool:
    """Whether the original evaluates this file with its EMA copy: it carries ``extra_state['ema']``
    (written only by ``--store-ema``, which only the VQA scripts pass, whose evaluation scripts
    pass ``--ema-eval``)."""
    extra = ckpt.get("extra_state") if isinstance(ckpt, Mapping) else None
    return isinstance(extra, Mapping) and bool(extra.get("ema"))


def from_official(
    ckpt: Any, *, ema: bool | None = False, source: str = "checkpoint", keep_dtype: bool = False
) -> tuple[OFAConfig, "OrderedDict[str, torch.Tensor]", dict]:
    """(config, state dict, meta) from a loaded official checkpoint (or a bare state dict).

    ``ema=True`` takes the EMA copy ``extra_state['ema']``, as the original's ``--ema-eval``
    does; ``ema=None`` takes it when the file carries one (:func:`evaluated_with_ema`). The
    state dict has our model's keys (official names, computed buffers dropped, the
    three tied embedding keys sharing one float32 tensor; ``keep_dtype`` keeps the stored dtype).
    A file written by :func:`save_official` may carry an ``openofa`` entry (:data:`OPENOFA_ENTRY`):
    the config fields the original's ``cfg`` has no argument for, and ``config.extra``.
    """
    if not isinstance(ckpt, Mapping):
        raise OFAError(f"{source}: expected a checkpoint dict, found {type(ckpt).__name__}")
    if ckpt.get("format") == "openofa-train":  # our trainer's last.pt: the model as it trains
        return _from_training(ckpt, ema=ema, source=source, keep_dtype=keep_dtype)
    notes: list[str] = []
    if ema is None:
        ema = evaluated_with_ema(ckpt)
        if ema:
            notes.append("used the EMA weights the original's evaluation uses (--ema-eval); ema=False for the plain ones")
    meta: dict[str, Any] = {"format": "official", "source": source, "ema": ema, "notes": notes}
    if "model" in ckpt:
        weights = ckpt["model"]
        if ema:
            extra = ckpt.get("extra_state")
            weights = extra.get("ema") if isinstance(extra, Mapping) else None
            if not weights:
                raise OFAError(f"{source}: no EMA weights in this checkpoint (extra_state['ema'] is missing)")
            if isinstance(extra, Mapping) and "ema_fp32_params" in extra:
                notes.append("used extra_state['ema'] (as --ema-eval does); ema_fp32_params ignored")
        model_cfg, task_cfg, origin = _hyperparameters(ckpt)
        history = ckpt.get("optimizer_history")
        if isinstance(history, list) and history and isinstance(history[-1], Mapping):
            meta["num_updates"] = to_plain(history[-1].get("num_updates"))
    elif _looks_like_state_dict(ckpt):
        if ema:
            raise OFAError(f"{source}: a bare state dict has no EMA weights")
        weights, model_cfg, task_cfg, origin = ckpt, {}, {}, "none"
    else:
        found = ", ".join(sorted(map(str, ckpt))[:6])
        raise OFAError(f"{source}: not an OFA checkpoint (no 'model' entry; top-level keys: {found})")
    if not isinstance(weights, Mapping):
        raise OFAError(f"{source}: 'model' entry is a {type(weights).__name__}, not a state dict")

    sd = upgrade_old_names(weights, notes)
    from openofa.petl.pi import from_pi_tuning_layout

    sd, pi_fields = from_pi_tuning_layout(sd)  # the π-Tuning code's adapter names, if it wrote the file
    if pi_fields:
        notes.append("adapters in the π-Tuning code's layout read as openofa's (adapter / attn_adapter, experts)")
    inferred = infer_from_state_dict(sd)
    if EMBED_KEY not in sd and "decoder.embed_tokens.weight" not in sd:
        raise OFAError(f"{source}: state dict has no token embedding ({EMBED_KEY})")
    config = config_from_hyperparameters(model_cfg, task_cfg, inferred, notes, source)
    if pi_fields:
        config = dataclasses.replace(config, **pi_fields)
    if origin != "none":
        config = _with_openofa_entry(config, ckpt.get(OPENOFA_ENTRY), source)
    state_dict = finalize_state_dict(config, sd, source=source, notes=notes, keep_dtype=keep_dtype)
    meta["arch"] = model_cfg.get("_name") or model_cfg.get("arch")
    meta["hyperparameters_from"] = origin
    if origin != "none" and ckpt.get(OPENOFA_ENTRY) is not None:
        # written by us: cfg['task'] is the model's settings plus the original's defaults, and the
        # model's own settings are back in config.extra
        own = config.extra.get("task")
        meta["task"] = task_settings(own if isinstance(own, Mapping) else {}, {}, source)
    else:
        meta["task"] = task_settings(task_cfg, model_cfg, source)
    return config, state_dict, meta


def _with_openofa_entry(config: OFAConfig, entry: Any, source: str) -> OFAConfig:
    """``config`` with what :func:`save_official` stored beside the original's ``cfg``."""
    if entry is None:
        return config
    entry = to_plain(entry)
    if not isinstance(entry, Mapping):
        raise OFAError(f"{source}: '{OPENOFA_ENTRY}' entry is a {type(entry).__name__}, not a dict")
    fields = entry.get("fields") or {}
    extra = entry.get("extra") or {}
    unknown = sorted(set(fields) - set(OPENOFA_FIELDS)) if isinstance(fields, Mapping) else None
    if unknown is None or unknown or not isinstance(extra, Mapping):
        what = f"unknown field(s) {', '.join(unknown)}" if unknown else "malformed"
        raise OFAError(f"{source}: '{OPENOFA_ENTRY}' entry is {what}")
    try:
        return OFAConfig(**{**config.to_dict(), **dict(fields), "extra": dict(extra)})
    except OFAError as e:
        raise OFAError(f"{source}: {e}") from None


def _from_training(ckpt: Mapping, *, ema: bool | None, source: str, keep_dtype: bool):
    """(config, state dict, meta) of a training checkpoint (``openofa.train.checkpoint``): its model
    config with the task settings the run recorded, and the model's (or with ``ema=True`` the
    EMA) weights."""
    model_config = ckpt.get("model_config")
    weights = ckpt.get("ema") if ema else ckpt.get("model")
    if ema and not weights:
        raise OFAError(f"{source}: this training checkpoint holds no EMA weights")
    if not isinstance(model_config, Mapping) or not isinstance(weights, Mapping):
        raise OFAError(f"{source}: a training checkpoint without its model_config or model weights")
    try:
        config = OFAConfig.from_dict(model_config)
    except OFAError as e:
        raise OFAError(f"{source}: {e}") from None
    state = OrderedDict((k, v if keep_dtype or not v.is_floating_point() else v.float()) for k, v in weights.items())
    meta = {"format": "training", "source": source, "ema": bool(ema), "notes": [],
            "task": dict(config.extra.get("task", {}))}
    return config, state, meta


def load_official(path: str | Path, *, ema: bool | None = False,
                  keep_dtype: bool = False) -> tuple[OFAConfig, "OrderedDict[str, torch.Tensor]", dict]:
    """Read an official ``.pt`` file through the safe unpickler (see :func:`from_official`)."""
    ckpt = load_pt(path)
    return from_official(ckpt, ema=ema, source=str(path), keep_dtype=keep_dtype)


# ---- writing ----------------------------------------------------------------------------------

#: top-level entry of the files we write holding what the original's cfg has no argument for
#: (the original's loader ignores unknown top-level entries)
OPENOFA_ENTRY = "openofa"
#: config fields stored in that entry: they change no tensor shape and nothing the original computes
OPENOFA_FIELDS = ("location_embedding_init", "text_vocab")
#: image trunks the original builds (its --resnet-type choices, all 64 planes wide)
ORIGINAL_RESNETS = ("resnet50", "resnet101", "resnet152")
#: the special token ids of every dictionary the original builds
ORIGINAL_SPECIALS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}

_SIZES = ("tiny", "medium", "base", "large", "huge")
_SHAPE_FIELDS = (
    "encoder_layers", "decoder_layers", "encoder_embed_dim", "decoder_embed_dim", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "resnet_type",
)


def arch_name(config: OFAConfig) -> str:
    """``ofa_<size>`` when the transformer/trunk sizes are a published size's, else ``ofa_large``
    (the original's base architecture function; every hyperparameter is written explicitly)."""
    for size in _SIZES:
        ref = get_config(size)
        if all(getattr(ref, f) == getattr(config, f) for f in _SHAPE_FIELDS):
            return f"ofa_{size}"
    return "ofa_large"


def model_hyperparameters(config: OFAConfig) -> dict[str, Any]:
    """``cfg['model']`` as the original would store it for ``config``."""
    c = config
    out: dict[str, Any] = {"_name": arch_name(c)}
    for side in ("encoder", "decoder"):
        out.update({
            f"{side}_embed_dim": getattr(c, f"{side}_embed_dim"),
            f"{side}_ffn_embed_dim": getattr(c, f"{side}_ffn_embed_dim"),
            f"{side}_layers": getattr(c, f"{side}_layers"),
            f"{side}_attention_heads": getattr(c, f"{side}_attention_heads"),
            f"{side}_normalize_before": True,
            f"{side}_learned_pos": True,
            f"{side}_layerdrop": 0,
            f"{side}_drop_path_rate": getattr(c, f"{side}_drop_path_rate"),
            f"{side}_embed_path": None,
        })
    out.update({
        "decoder_output_dim": c.decoder_embed_dim,
        "decoder_input_dim": c.decoder_embed_dim,
        "max_source_positions": c.max_source_positions,
        "max_target_positions": c.max_target_positions,
        "dropout": c.dropout,
        "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout,
        "relu_dropout": 0.0,
        "activation_fn": "gelu",
        "share_all_embeddings": True,
        "share_decoder_input_output_embed": True,
        "no_scale_embedding": True,
        "layernorm_embedding": True,
        "patch_layernorm_embedding": True,
        "code_layernorm_embedding": True,
        "add_type_embedding": True,
        "entangle_position_embedding": c.entangle_position_embedding,
        "disable_entangle": c.disable_entangle,
        "interpolate_position": c.interpolate_position,
        "orig_patch_image_size": c.orig_patch_image_size,
        "adaptive_softmax_cutoff": None,
        "adaptive_input": False,
        "resnet_type": c.resnet_type,
        "resnet_drop_path_rate": c.resnet_drop_path_rate,
        "token_bucket_size": c.token_bucket_size,
        "image_bucket_size": c.image_bucket_size,
        "attn_scale_factor": c.attn_scale_factor,
        "code_image_size": c.code_image_size,
        "scale_attn": c.scale_attn,
        "scale_fc": c.scale_fc,
        "scale_heads": c.scale_heads,
        "scale_resids": c.scale_resids,
        "patch_image_size": c.patch_image_size,
        "orig_patch_image_size": c.orig_patch_image_size,
        "vocab_size": c.vocab_size,
        "quant_noise_pq": 0,
        "sync_bn": False,
        "adapter": c.adapter,
        "adapter_dim": c.adapter_dim,
    })
    for side in ("encoder", "decoder"):  # prefix tuning, with the original's filled-in defaults
        out.update({
            f"{side}_prompt": getattr(c, f"{side}_prompt"),
            f"{side}_prompt_type": getattr(c, f"{side}_prompt_type"),
            f"{side}_prompt_length": getattr(c, f"{side}_prompt_length"),
            f"{side}_prompt_projection": getattr(c, f"{side}_prompt_projection"),
            f"{side}_prompt_dim": getattr(c, f"{side}_prompt_dim") or 2 * c.encoder_embed_dim,
        })
    return out


def task_hyperparameters(config: OFAConfig) -> dict[str, Any]:
    zh = config.language == "zh"
    return {
        "_name": "caption",
        "bpe": "bert" if zh else "gpt2",
        "bpe_dir": "../../utils/BERT_CN_dict" if zh else "../../utils/BPE",
        "max_source_positions": config.max_source_positions,
        "max_target_positions": config.max_target_positions,
        "patch_image_size": config.patch_image_size,
        "orig_patch_image_size": config.orig_patch_image_size,
        "num_bins": config.num_bins,
        "code_dict_size": config.code_dict_size,
        "imagenet_default_mean_and_std": False,
        "constraint_range": None,
    }


def cannot_represent(config: OFAConfig) -> str | None:
    """Why the official layout cannot hold ``config`` (None when it can): the original has no
    argument for the field, and the file would load back as a different model."""
    reasons = []
    if config.attn_adapter:
        reasons.append("attn_adapter=True (the π-Tuning code's adapters after the self-attention; the original "
                       "has only the FFN one)")
    if config.adapter_experts:
        reasons.append(f"adapter_experts={config.adapter_experts} (π-Tuning's interpolated adapters; the original "
                       "has one adapter per layer)")
    if config.resnet_type not in ORIGINAL_RESNETS:
        reasons.append(f"resnet_type={config.resnet_type!r} (the original builds {', '.join(ORIGINAL_RESNETS)})")
    if config.resnet_width != 64:
        reasons.append(f"resnet_width={config.resnet_width} (the original's trunk is 64 planes wide)")
    specials = [f"{k}={getattr(config, k)}" for k, v in ORIGINAL_SPECIALS.items() if getattr(config, k) != v]
    if specials:
        reasons.append(f"{', '.join(specials)} (the original's dictionaries have bos=0, pad=1, eos=2, unk=3)")
    task = config.extra.get("task") if isinstance(config.extra.get("task"), Mapping) else {}
    written = task_hyperparameters(config)
    for name in ("patch_image_size", "num_bins", "code_dict_size", "bpe"):
        if name in task and task[name] != written[name]:
            reasons.append(f"task setting {name}={task[name]!r} differs from the model's {written[name]!r} "
                           "(cfg['task'] holds one value)")
    try:
        json.dumps(config.extra)
    except (TypeError, ValueError) as e:
        reasons.append(f"config.extra is not plain data ({e})")
    return "; ".join(reasons) or None


def _scalars(settings: Any) -> dict[str, Any]:
    """The plain-valued entries of a model's task settings (what ``cfg['task']`` can hold)."""
    if not isinstance(settings, Mapping):
        return {}
    return {k: v for k, v in settings.items() if isinstance(v, (str, int, float, bool))}


def build_official(
    config: OFAConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    ema_state_dict: Mapping[str, torch.Tensor] | None = None,
    task: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict :func:`save_official` writes: the original trainer's checkpoint layout."""
    model = with_computed_buffers(
        config, finalize_state_dict(config, state_dict, source="state dict to save", keep_dtype=True))
    zh = config.language == "zh"
    cfg = {
        "_name": None,
        "common": {"_name": None, "fp16": False, "seed": 1, "log_format": "simple"},
        "checkpoint": {"_name": None, "no_save_optimizer_state": True},
        "model": model_hyperparameters(config),
        "task": {**task_hyperparameters(config), **_scalars(config.extra.get("task")), **dict(task or {})},
        "criterion": {"_name": "adjust_label_smoothed_cross_entropy", "label_smoothing": 0.1},
        "optimizer": {"_name": "adam", "adam_betas": "(0.9,0.999)", "adam_eps": 1e-08},
        "lr_scheduler": {"_name": "polynomial_decay"},
        "bpe": {"_name": "bert" if zh else "gpt2"},
        "tokenizer": None,
        "ema": {"_name": None, "store_ema": ema_state_dict is not None},
    }
    extra_state: dict[str, Any] = {
        "metrics": {},
        "previous_training_time": 0.0,
        "train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": False},
    }
    if ema_state_dict is not None:
        extra_state["ema"] = with_computed_buffers(
            config, finalize_state_dict(config, ema_state_dict, source="EMA state dict to save", keep_dtype=True)
        )
    default = OFAConfig()
    ours = {name: getattr(config, name) for name in OPENOFA_FIELDS if getattr(config, name) != getattr(default, name)}
    entry = {OPENOFA_ENTRY: {"fields": ours, "extra": dict(config.extra)}} if ours or config.extra else {}
    return {
        "args": None,
        "cfg": cfg,
        "model": model,
        "criterion": None,
        "optimizer_history": [{
            "criterion_name": "AdjustLabelSmoothedCrossEntropyCriterion",
            "optimizer_name": "FairseqAdam",
            "lr_scheduler_state": {"best": None},
            "num_updates": 0,
        }],
        "task_state": {},
        "extra_state": extra_state,
        **entry,
    }


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_official(
    path: str | Path,
    config: OFAConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    ema_state_dict: Mapping[str, torch.Tensor] | None = None,
    task: Mapping[str, Any] | None = None,
) -> Path:
    """Write an official-layout ``.pt`` file (no optimizer state). Returns the path."""
    atomic_torch_save(build_official(config, state_dict, ema_state_dict=ema_state_dict, task=task), path)
    return Path(path)
