"""One entry point for every checkpoint layout: detection, conversion, and building a model."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from openofa.config import OFAConfig
from openofa.errors import OFAError
from openofa.checkpoints import hf, ours
from openofa.checkpoints.official import load_official, save_official

FORMATS = ("ours", "official", "hf")

_EXPECTED = (
    "expected an official .pt file, a folder with config.json + model.safetensors (openofa), "
    "a Hugging Face OFA folder (config.json + pytorch_model.bin or model.safetensors), "
    "or a .safetensors file next to such a config.json"
)


def detect_format(path: str | Path) -> str:
    """'official', 'ours' or 'hf' for ``path``, or an OFAError saying what was expected."""
    path = Path(path)
    if not path.exists():
        raise OFAError(f"{path}: no such file or directory")
    if path.is_dir() or path.suffix == ".safetensors":
        cfg_path = (path if path.is_dir() else path.parent) / "config.json"
        if not cfg_path.is_file():
            where = "folder has no config.json" if path.is_dir() else \
                "a .safetensors file needs a config.json next to it"
            raise OFAError(f"{path}: {where}; {_EXPECTED}")
        data = ours.read_config(cfg_path)
        if ours.is_our_config(data):
            return "ours"
        if hf.is_hf_config(data):
            return "hf"
        raise OFAError(f"{cfg_path}: neither an openofa config nor an OFA Hugging Face config; {_EXPECTED}")
    if path.suffix == ".json":
        raise OFAError(f"{path}: a config file alone holds no weights; {_EXPECTED}")
    if path.suffix == ".bin" and (path.parent / "config.json").is_file():
        if hf.is_hf_config(ours.read_config(path.parent / "config.json")):
            return "hf"
    return "official"


def load_checkpoint(path: str | Path, *, ema: bool | None = False) -> tuple[OFAConfig, "OrderedDict[str, torch.Tensor]", dict]:
    """Read any supported checkpoint: returns (config, state dict, meta).

    The state dict has our model's keys (the official names without the computed buffers; the
    three tied embedding keys share one float32 tensor). ``meta`` is a plain dict with at least
    ``format``, ``source``, ``ema`` and ``notes`` (what was changed or assumed while reading).
    ``ema=True`` takes the EMA weights of an official checkpoint; ``ema=None`` takes them when
    the original's evaluation of that file does (a file that carries them: the VQA files).
    """
    path = Path(path)
    fmt = detect_format(path)
    if ema and fmt != "official":
        raise OFAError(f"{path}: EMA weights exist only in official checkpoints (this is the {fmt} layout)")
    if fmt == "official":
        return load_official(path, ema=ema)
    ema = False
    if fmt == "ours":
        if path.is_dir():
            return ours.load_pretrained(path)
        return ours.load_pretrained(path.parent, weights=path)
    if path.is_dir():
        return hf.load_hf(path)
    # a single HF weights file next to its config.json
    hf_config = ours.read_config(path.parent / "config.json")
    config, sd, meta = hf.from_hf(hf_config, hf.read_weight_file(path), source=str(path))
    return config, sd, meta


def save_checkpoint(dst: str | Path, config: OFAConfig, state_dict: Any, *, fmt: str = "ours") -> Path:
    """Write ``state_dict`` in layout ``fmt`` (a folder for 'ours'/'hf', a file for 'official')."""
    if fmt == "ours":
        return ours.save_pretrained(dst, config, state_dict)
    if fmt == "official":
        return save_official(dst, config, state_dict)
    if fmt == "hf":
        return hf.save_hf(dst, config, state_dict)
    raise OFAError(f"unknown checkpoint format {fmt!r}; expected one of {', '.join(FORMATS)}")


def convert(src: str | Path, dst: str | Path, *, fmt: str = "ours", ema: bool | None = None) -> Path:
    """Read ``src`` (any layout) and write it to ``dst`` in layout ``fmt``; returns ``dst``."""
    if fmt not in FORMATS:
        raise OFAError(f"unknown checkpoint format {fmt!r}; expected one of {', '.join(FORMATS)}")
    config, sd, meta = load_checkpoint(src, ema=ema)
    return save_checkpoint(dst, with_task_settings(config, meta.get("task")), sd, fmt=fmt)


def with_task_settings(config: OFAConfig, settings: Any) -> OFAConfig:
    """``config`` with a file's task settings (image size, mean/std, prompt type ...) kept in
    ``config.extra["task"]``, so that they travel with the weights into every format we write."""
    if not settings:
        return config
    import dataclasses

    extra = dict(config.extra)
    extra["task"] = {**dict(extra.get("task") or {}), **dict(settings)}
    return dataclasses.replace(config, extra=extra)


def load_model(
    path: str | Path,
    *,
    ema: bool = False,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Any:
    """Build the model for a checkpoint, load its weights strictly, and return it in eval mode
    (``model.checkpoint_meta`` holds the reader's meta)."""
    from openofa.model import model_from_state_dict

    config, sd, meta = load_checkpoint(path, ema=ema)
    model = model_from_state_dict(config, sd, source=str(path))
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    model.eval()
    model.checkpoint_meta = meta
    return model
