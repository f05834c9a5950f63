"""The checkpoint formats openofa reads and writes, as one registry.

Each :class:`CheckpointFormat` says how to recognise its layout (``detect``), read it (``load``:
config, state dict with the stored dtypes, meta), write it (``save``) and whether it can hold a
given model at all (``can_represent``: None, or the reason it cannot). ``save`` asks
``can_represent`` before anything is written, so a layout never receives a model it would give
back as a different one. :data:`FORMATS` maps each name to its format; ``load.py``
(:func:`~openofa.checkpoints.load.detect_format`, ``load_checkpoint``, ``save_checkpoint``,
``convert``) and ``ofa convert --to`` take their choices from it. ``docs/checkpoints.md`` says what
each format can represent.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from openofa.config import OFAConfig
from openofa.errors import OFAError

@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    description: str
    #: whether ``path`` (an existing file or folder) is in this layout
    detect: Callable[[Path], bool]
    #: (config, state dict in the stored dtypes, meta) of ``path``; ``ema`` as in ``load_checkpoint``
    _load: Callable[[Path, Any], tuple]
    _save: Callable[[Path, OFAConfig, Mapping[str, torch.Tensor]], Path]
    #: None when this layout holds ``(config, state_dict)`` faithfully, else the reason it cannot
    can_represent: Callable[[OFAConfig, Mapping[str, torch.Tensor]], "str | None"]

    def load(self, path: str | Path, ema: bool | None = False) -> tuple[OFAConfig, Any, dict]:
        path = Path(path)
        if ema and self.name != "official":
            raise OFAError(f"{path}: EMA weights exist only in official checkpoints (this is the {self.name} layout)")
        return self._load(path, ema)

    def save(self, dst: str | Path, config: OFAConfig, state_dict: Mapping[str, torch.Tensor]) -> Path:
        """Write ``dst`` in this layout, or refuse (one-line OFAError) before writing anything."""
        lora = [k for k in state_dict if ".lora_A." in k or ".lora_B." in k]
        if lora:
            raise OFAError(f"{dst}: the model carries unmerged LoRA updates ({lora[0]} ...): merge them into the "
                           "weights (openofa.petl.merge_lora, or export_merged: true in a recipe) or save the adapter alone "
                           "(openofa.petl.files.save_adapter)")
        reason = self.can_represent(config, state_dict)
        if reason:
            raise OFAError(f"{dst}: the {self.name} format cannot represent this model: {reason}")
        return self._save(Path(dst), config, state_dict)


# ---- writing a folder whole --------------------------------------------------------------------


def write_folder(dst: Path, write: Callable[[Path], Any]) -> Path:
    """``write`` the folder's files into a temporary sibling, then move them into ``dst``: a write
    that fails midway leaves ``dst`` as it was."""
    if dst.exists() and not dst.is_dir():
        raise OFAError(f"{dst}: exists and is not a folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        dst.mkdir(exist_ok=True)
        for f in sorted(tmp.iterdir()):
            os.replace(f, dst / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


# ---- detection ---------------------------------------------------------------------------------


def _folder_config(path: Path) -> dict | None:
    """The JSON of the config.json that goes with ``path`` (a folder or a .safetensors/.bin file)."""
    from openofa.checkpoints.ours import read_config

    cfg = (path if path.is_dir() else path.parent) / "config.json"
    return read_config(cfg) if cfg.is_file() else None


def _detect_ours(path: Path) -> bool:
    from openofa.checkpoints.ours import is_our_config

    if not (path.is_dir() or path.suffix == ".safetensors"):
        return False
    return is_our_config(_folder_config(path))


def _detect_hf(path: Path) -> bool:
    from openofa.checkpoints.hf import is_hf_config

    if not (path.is_dir() or path.suffix in (".safetensors", ".bin")):
        return False
    data = _folder_config(path)
    return isinstance(data, dict) and is_hf_config(data)


def _detect_official(path: Path) -> bool:
    return path.is_file() and path.suffix not in (".safetensors", ".json") and not _detect_hf(path)


# ---- reading -----------------------------------------------------------------------------------


def _load_ours(path: Path, ema: Any) -> tuple:
    from openofa.checkpoints.ours import load_pretrained

    if path.is_dir():
        return load_pretrained(path, keep_dtype=True)
    return load_pretrained(path.parent, weights=path, keep_dtype=True)


def _load_official(path: Path, ema: Any) -> tuple:
    from openofa.checkpoints.official import load_official

    return load_official(path, ema=ema, keep_dtype=True)


def _load_hf(path: Path, ema: Any) -> tuple:
    from openofa.checkpoints import hf

    if path.is_dir():
        return hf.load_hf(path, keep_dtype=True)
    # a single HF weights file next to its config.json
    hf_config = _folder_config(path)
    return hf.from_hf(hf_config, hf.read_weight_file(path), source=str(path), keep_dtype=True)


# ---- writing -----------------------------------------------------------------------------------


def _save_ours(dst: Path, config: OFAConfig, sd: Mapping[str, torch.Tensor]) -> Path:
    from openofa.checkpoints.ours import save_pretrained

    return write_folder(dst, lambda tmp: save_pretrained(tmp, config, sd))


def _save_official(dst: Path, config: OFAConfig, sd: Mapping[str, torch.Tensor]) -> Path:
    from openofa.checkpoints.official import save_official

    if dst.is_dir():
        raise OFAError(f"{dst}: is a folder; the official format is one .pt file")
    return save_official(dst, config, sd)  # written to a temporary name, then renamed


def _save_hf(dst: Path, config: OFAConfig, sd: Mapping[str, torch.Tensor]) -> Path:
    from openofa.checkpoints.hf import save_hf

    return write_folder(dst, lambda tmp: save_hf(tmp, config, sd))


# ---- what each layout can hold -----------------------------------------------------------------


def _extra_is_json(config: OFAConfig) -> str | None:
    try:
        json.dumps(config.extra)
    except (TypeError, ValueError) as e:
        return f"config.extra is not JSON-serialisable ({e})"
    return None


def _can_ours(config: OFAConfig, sd: Mapping[str, torch.Tensor]) -> str | None:
    # every OFAConfig field is stored in config.json and every tensor, in its dtype, in safetensors
    return _extra_is_json(config)


def _can_official(config: OFAConfig, sd: Mapping[str, torch.Tensor]) -> str | None:
    from openofa.checkpoints.official import cannot_represent

    return cannot_represent(config)


def _can_hf(config: OFAConfig, sd: Mapping[str, torch.Tensor]) -> str | None:
    from openofa.checkpoints.hf import cannot_represent

    return cannot_represent(config)


FORMATS: dict[str, CheckpointFormat] = {
    f.name: f
    for f in (
        CheckpointFormat(
            "ours", "openofa folder: config.json (every OFAConfig field) + model.safetensors",
            _detect_ours, _load_ours, _save_ours, _can_ours,
        ),
        CheckpointFormat(
            "official", "the original's fairseq .pt file (cfg['model'] / cfg['task'] + state dict)",
            _detect_official, _load_official, _save_official, _can_official,
        ),
        CheckpointFormat(
            "hf", "the Hugging Face port's folder: config.json + pytorch_model.bin",
            _detect_hf, _load_hf, _save_hf, _can_hf,
        ),
    )
}


def get_format(name: str) -> CheckpointFormat:
    fmt = FORMATS.get(name)
    if fmt is None:
        raise OFAError(f"unknown checkpoint format {name!r}; expected one of {', '.join(FORMATS)}")
    return fmt
