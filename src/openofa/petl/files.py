"""Adapter folders in the ``peft`` library's layout: ``adapter_config.json`` and
``adapter_model.safetensors`` with keys ``base_model.model.<parameter name>``.

A LoRA adapter's ``adapter_config.json`` is a ``peft`` ``LoraConfig`` (``peft_type: LORA``), so
``peft.PeftModel.from_pretrained(model, folder)`` reads what we write, and we read LoRA folders
``peft`` wrote (its ``.default`` adapter-name infix is dropped). The original's methods have no
``peft`` counterpart; their folders say ``peft_type: OPENOFA`` and keep the official key names.
For every method the safetensors metadata carries ``openofa``: the methods with their options, the
shape of the model the adapter was made for (checked before loading: an adapter for another shape is
a one-line error) and the tasks it was trained for. Only tensors are read (no pickle).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from openofa.errors import OFAError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
SHAPE_FIELDS = ("encoder_layers", "decoder_layers", "encoder_embed_dim", "encoder_attention_heads",
                "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "vocab_size", "resnet_type")


def _method_spec(method) -> dict:
    return {"method": method.name, **dataclasses.asdict(method)}


def model_shape(config) -> dict:
    return {k: getattr(config, k) for k in SHAPE_FIELDS}


def is_adapter_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


def save_adapter(model, spec: Any, folder: str | Path, *, base_model: str | None = None,
                 tasks: list[str] | None = None, state_dict: dict | None = None) -> Path:
    """Write the weights ``spec``'s methods train (and nothing else) to ``folder``: ``model``'s
    own, or those of ``state_dict`` (a gathered copy of them)."""
    from safetensors.torch import save_file

    from openofa.petl import methods_from, trainable_names

    methods = methods_from(spec)
    if not methods:
        raise OFAError("save_adapter: no petl method given")
    names = trainable_names(model, methods_as_specs(methods))
    params = dict(model.named_parameters()) if state_dict is None else state_dict
    tensors = {PREFIX + n: params[n].detach().to("cpu").contiguous().clone() for n in names}
    meta = {"methods": [_method_spec(m) for m in methods], "model": model_shape(model.config),
            "tasks": list(tasks or [])}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if [m.name for m in methods] == ["lora"]:
        config = _peft_lora_config(methods[0], model, base_model)
    else:
        config = {"peft_type": "OPENOFA", "base_model_name_or_path": base_model, "methods": meta["methods"]}
    tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "openofa": json.dumps(meta)})
    tmp.replace(folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def methods_as_specs(methods) -> list[dict]:
    return [_method_spec(m) for m in methods]


def _peft_lora_config(lora, model, base_model: str | None) -> dict:
    from openofa.petl.lora import lora_targets

    targets = lora.target_modules
    if targets == "all-linear":  # peft expands this name only for transformers models
        targets = lora_targets(model, targets)
    return {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model, "revision": None,
        "inference_mode": True, "r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
        "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
        "init_lora_weights": True, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": {}, "alpha_pattern": {}, "use_rslora": False, "use_dora": False,
    }


def read_adapter(folder: str | Path) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """(method specs, tensors by parameter name, metadata) of an adapter folder."""
    from safetensors import safe_open

    folder = Path(folder)
    if not is_adapter_folder(folder):
        raise OFAError(f"{folder}: not an adapter folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except json.JSONDecodeError as e:
        raise OFAError(f"{folder / CONFIG_NAME}: not valid JSON ({e.msg} at line {e.lineno})") from None
    try:
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
            meta_text = (f.metadata() or {}).get("openofa")
            tensors = {}
            for key in f.keys():
                name = key[len(PREFIX):] if key.startswith(PREFIX) else key
                tensors[name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")] = \
                    f.get_tensor(key)
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise OFAError(f"{folder / WEIGHTS_NAME}: cannot read ({str(e).splitlines()[0][:200]})") from None
    meta = json.loads(meta_text) if meta_text else {}
    if meta.get("methods"):
        specs = meta["methods"]
    elif config.get("peft_type") == "LORA":  # written by peft
        specs = [{"method": "lora", "r": int(config["r"]), "alpha": float(config.get("lora_alpha", 8)),
                  "dropout": float(config.get("lora_dropout", 0.0)), "target_modules": config["target_modules"]}]
    elif config.get("peft_type") == "OPENOFA" and config.get("methods"):
        specs = config["methods"]
    else:
        raise OFAError(f"{folder / CONFIG_NAME}: peft_type {config.get('peft_type')!r} is not one openofa "
                       "reads (LORA, or OPENOFA for adapters, prefixes and BitFit)")
    return specs, tensors, meta


def load_adapter(model, folder: str | Path) -> dict:
    """Add the adapter of ``folder`` to ``model`` (in place) and load its weights; returns its
    metadata (``methods``, and ``tasks`` / ``model`` when written by openofa). An adapter made for
    a model of another shape is refused before anything changes."""
    from openofa.petl import apply, trainable_names

    specs, tensors, meta = read_adapter(folder)
    made_for = meta.get("model")
    if made_for:
        have = model_shape(model.config)
        diff = [f"{k} {made_for[k]} (this model: {have[k]})" for k in SHAPE_FIELDS
                if k in made_for and made_for[k] != have[k]]
        if diff:
            raise OFAError(f"{folder}: the adapter was made for another model shape: {', '.join(diff)}")
    _check_lora_shapes(model, tensors, folder)
    for spec in specs:
        if spec["method"] == "pi":  # the mixed experts are in the folder: only the structure is built
            from openofa.petl.pi import build_interpolated

            downs = [t for k, t in tensors.items() if k.endswith(".experts.0.down_proj.weight")]
            if not downs:
                raise OFAError(f"{folder}: a π-Tuning adapter without expert weights")
            build_interpolated(model, len(spec["experts"]), downs[0].shape[0],
                               any(".attn_adapter." in k for k in tensors))
        else:
            apply(model, [spec])
    own = dict(model.named_parameters())
    for name, t in tensors.items():
        if name not in own:
            raise OFAError(f"{folder}: weight {name} has no place in this model")
        if tuple(t.shape) != tuple(own[name].shape):
            raise OFAError(f"{folder}: weight {name} is {tuple(t.shape)}, the model's is "
                           f"{tuple(own[name].shape)} (an adapter for another model shape)")
    missing = sorted(set(trainable_names(model, specs)) - set(tensors))
    if missing:
        raise OFAError(f"{folder}: no weight for {missing[0]} ({len(missing)} missing)")
    with torch.no_grad():
        for name, t in tensors.items():
            own[name].copy_(t.to(own[name].dtype))
    return {**meta, "methods": specs}


def _check_lora_shapes(model, tensors: dict, folder) -> None:
    """LoRA weights against the layers they update, before the model is changed (a ``peft``
    folder has no openofa metadata to compare)."""
    modules = dict(model.named_modules())
    for name, t in tensors.items():
        for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if name.endswith(part):
                base = modules.get(name[: -len(part)])
                if base is None or not hasattr(base, "in_features"):
                    raise OFAError(f"{folder}: weight {name} updates no linear layer of this model")
                size = base.in_features if dim == 1 else base.out_features
                if t.dim() != 2 or t.shape[dim] != size:
                    raise OFAError(f"{folder}: weight {name} is {tuple(t.shape)} for a layer of "
                                   f"{base.in_features} -> {base.out_features} (an adapter for another model shape)")
