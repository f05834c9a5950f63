"""One entry point for every checkpoint layout: detection, conversion, and building a model."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from openofa.config import OFAConfig
from openofa.errors import OFAError
from openofa.checkpoints.formats import FORMATS, get_format
from openofa.checkpoints.keys import as_float32

_EXPECTED = (
    "expected an official .pt file, a folder with config.json + model.safetensors (openofa), "
    "a Hugging Face OFA folder (config.json + pytorch_model.bin or model.safetensors), "
    "or a .safetensors file next to such a config.json"
)


def detect_format(path: str | Path) -> str:
    """The name (a key of :data:`~openofa.checkpoints.formats.FORMATS`) of the layout of ``path``,
    or an OFAError saying what was expected."""
    path = Path(path)
    if not path.exists():
        raise OFAError(f"{path}: no such file or directory")
    for fmt in FORMATS.values():
        if fmt.detect(path):
            return fmt.name
    if path.is_dir() and (path / "adapter_config.json").is_file():
        raise OFAError(f"{path}: an adapter folder (parameter-efficient tuning), not a whole model; load its base "
                       f"model with the adapter: --model BASE --adapter {path} (OFA.load(BASE, adapter=...))")
    if path.is_dir() or path.suffix == ".safetensors":
        cfg_path = (path if path.is_dir() else path.parent) / "config.json"
        if not cfg_path.is_file():
            where = "folder has no config.json" if path.is_dir() else \
                "a .safetensors file needs a config.json next to it"
            raise OFAError(f"{path}: {where}; {_EXPECTED}")
        raise OFAError(f"{cfg_path}: neither an openofa config nor an OFA Hugging Face config; {_EXPECTED}")
    if path.suffix == ".json":
        raise OFAError(f"{path}: a config file alone holds no weights; {_EXPECTED}")
    raise OFAError(f"{path}: not a checkpoint; {_EXPECTED}")


def load_checkpoint(path: str | Path, *, ema: bool | None = False) -> tuple[OFAConfig, "OrderedDict[str, torch.Tensor]", dict]:
    """Read any supported checkpoint: returns (config, state dict, meta).

    The state dict has our model's keys (the official names without the computed buffers; the
    three tied embedding keys share one float32 tensor: other floating dtypes are cast, with a
    note; ``FORMATS[name].load`` keeps the stored dtypes). ``meta`` is a plain dict with at least
    ``format``, ``source``, ``ema`` and ``notes`` (what was changed or assumed while reading).
    ``ema=True`` takes the EMA weights of an official checkpoint; ``ema=None`` takes them when
    the original's evaluation of that file does (a file that carries them: the VQA files).
    """
    path = Path(path)
    config, sd, meta = FORMATS[detect_format(path)].load(path, ema=ema)
    return config, as_float32(sd, meta["notes"]), meta


def save_checkpoint(dst: str | Path, config: OFAConfig, state_dict: Any, *, fmt: str = "ours") -> Path:
    """Write ``state_dict`` in layout ``fmt`` (a folder for 'ours'/'hf', a file for 'official'),
    tensors in their dtype; a model the layout cannot represent is refused before anything is written."""
    return get_format(fmt).save(dst, config, state_dict)


def convert(src: str | Path, dst: str | Path, *, fmt: str = "ours", ema: bool | None = None) -> Path:
    """Read ``src`` (any layout) and write it to ``dst`` in layout ``fmt``, tensors in their stored
    dtype; returns ``dst``. Refused before anything is written: an unknown ``fmt``, ``dst`` that is
    ``src`` or lies inside it (or holds it), a model the layout cannot represent."""
    target = get_format(fmt)
    src_r, dst_r = Path(src).resolve(), Path(dst).resolve()
    if src_r == dst_r or src_r in dst_r.parents or dst_r in src_r.parents:
        where = "is" if src_r == dst_r else "is inside" if src_r in dst_r.parents else "holds"
        raise OFAError(f"{dst}: the destination {where} the source {src}; write the converted checkpoint elsewhere")
    config, sd, meta = FORMATS[detect_format(src)].load(Path(src), ema=ema)
    return target.save(dst, with_task_settings(config, meta.get("task")), sd)


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
