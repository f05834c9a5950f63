"""Our own checkpoint format: a folder with

* ``config.json``: ``OFAConfig.to_dict()`` plus ``"format": "openofa"`` and ``"format_version"``;
* ``model.safetensors``: our model's state dict (official key names) with the tied embedding
  stored once (under ``encoder.embed_tokens.weight``) and no computed buffers.

safetensors needs no unpickling at all, which is why it is the format we write by default.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch

from openofa.config import OFAConfig
from openofa.errors import OFAError
from openofa.checkpoints.keys import TIED_KEYS, finalize_state_dict

FORMAT = "openofa"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def is_our_config(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == FORMAT


def config_to_json(config: OFAConfig) -> str:
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **config.to_dict()}
    try:
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    except TypeError as e:
        raise OFAError(f"config.extra is not JSON-serialisable ({e})") from None


def config_from_json(data: Mapping[str, Any], source: str) -> OFAConfig:
    if not is_our_config(data):
        raise OFAError(f"{source}: not an openofa config (no \"format\": \"{FORMAT}\" entry)")
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise OFAError(f"{source}: format_version {version!r} is newer than this openofa understands ({FORMAT_VERSION})")
    fields = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    try:
        return OFAConfig.from_dict(fields)
    except OFAError as e:
        raise OFAError(f"{source}: {e}") from None
    except (TypeError, ValueError) as e:
        raise OFAError(f"{source}: bad config value ({e})") from None


def save_pretrained(folder: str | Path, config: OFAConfig, state_dict: Mapping[str, torch.Tensor],
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``folder`` (created if needed).
    Tensors keep their dtype unless ``dtype`` (e.g. ``torch.float16``) says otherwise for the
    floating ones; :func:`load_pretrained` returns float32 unless asked to keep the stored dtypes."""
    sd = finalize_state_dict(config, state_dict, source="state dict to save", keep_dtype=True)
    text = config_to_json(config)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in sd.items() if k not in TIED_KEYS}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(tensors, folder / WEIGHTS_FILE, {"format": "pt", "openofa_format_version": str(FORMAT_VERSION)})
    (folder / CONFIG_FILE).write_text(text)
    return folder


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors ``save_file`` through a temporary name, readable like any other file."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(dict(tensors), str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)  # the writer creates owner-only files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_config(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise OFAError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise OFAError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise OFAError(f"{path}: expected a JSON object")
    return data


def load_pretrained(
    folder: str | Path, *, weights: str | Path | None = None, keep_dtype: bool = False
) -> tuple[OFAConfig, "OrderedDict[str, torch.Tensor]", dict]:
    """(config, state dict, meta) from a folder written by :func:`save_pretrained`
    (``weights`` may name another ``.safetensors`` file to read with that folder's config;
    ``keep_dtype`` returns the tensors in their stored dtype instead of float32)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = config_from_json(read_config(folder / CONFIG_FILE), str(folder / CONFIG_FILE))
    wpath = Path(weights) if weights is not None else folder / WEIGHTS_FILE
    if not wpath.is_file():
        raise OFAError(f"{folder}: no {wpath.name}")
    try:
        tensors = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise OFAError(f"{wpath}: cannot read safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    notes: list[str] = []
    sd = finalize_state_dict(config, tensors, source=str(wpath), notes=notes, keep_dtype=keep_dtype)
    return config, sd, {"format": "ours", "source": str(folder), "ema": False, "notes": notes}
