"""Training checkpoints (everything needed to continue a run exactly) and exported weights.

``<run_dir>/last.pt`` is a ``torch.save`` of one plain dict::

    format, format_version
    model          state dict of the unwrapped model (full, on CPU, even under FSDP)
    optimizer      AdamW state (under FSDP: the full, unsharded state, keyed by parameter name)
    scheduler      where the lr schedule is (the schedule itself comes from the config)
    scaler         fp16 GradScaler state, or None
    ema            EMA tensors by state-dict key, or None
    rng            per process: python, numpy, torch CPU and CUDA generator states
    progress       epoch, micro-batches done in it, updates done, best metric, finished
    data           seed, dataset size, batch layout and a digest of the epoch's order
    train_config, model_config   as dicts (for the record and for checks on resume)

It holds only tensors, numbers, strings, lists and dicts, and is read back with
``torch.load(weights_only=True)``: no allow-list is needed. It is written atomically: a temporary
file in the same folder, flushed and fsync'ed, renamed over ``last.pt`` with ``os.replace``, and
the folder fsync'ed, so a run killed at any moment leaves either the old or the new checkpoint.

Exported weights (``best/``, ``final/``) are our safetensors layout (``save_pretrained``), which
``openofa.load`` reads; they are swapped in as whole folders.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from openofa.errors import OFAError

FORMAT = "openofa-train"
FORMAT_VERSION = 1


# ---- atomic files ------------------------------------------------------------------------------------
def fsync_dir(folder: str | Path) -> None:
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename over ``path``, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def load_training_checkpoint(path: str | Path) -> dict:
    """Read a ``last.pt`` written by :func:`atomic_torch_save` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise OFAError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign file: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OFAError(f"{path}: cannot read training checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise OFAError(f"{path}: not an openofa training checkpoint")
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise OFAError(f"{path}: format_version {ckpt.get('format_version')} is newer than this openofa understands")
    return ckpt


# ---- random number generators -------------------------------------------------------------------------
def capture_rng() -> dict:
    """Python, numpy, torch CPU and CUDA generator states, as tensors and plain values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.random.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.random.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class preserved_rng:
    """Context manager: whatever runs inside (validation, exports) leaves the generators as they were."""

    def __enter__(self) -> "preserved_rng":
        self.state = capture_rng()
        return self

    def __exit__(self, *exc: Any) -> None:
        restore_rng(self.state)


# ---- model / optimizer state (plain, DDP or FSDP) ---------------------------------------------------------
# torch.distributed.checkpoint's state-dict API gives the same layout in every mode: full tensors,
# and optimizer state keyed by parameter name rather than position, so a checkpoint written under
# FSDP resumes under DDP or in one process, and the other way round.
def gather_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Full CPU state dicts of ``model`` (unwrapped, or the FSDP model) and the optimizer. Under FSDP
    this is a collective call and only rank 0 receives the tensors."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=opts), None
    return get_state_dict(model, optimizer, options=opts)


def apply_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict,
                optim_state: dict | None) -> None:
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    try:
        set_model_state_dict(model, model_state, options=StateDictOptions(full_state_dict=True, strict=True))
        if optimizer is not None and optim_state is not None:
            # parameters that never received a gradient (unused modules) have no AdamW state yet
            set_optimizer_state_dict(model, optimizer, optim_state,
                                     options=StateDictOptions(full_state_dict=True, strict=False))
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OFAError(f"checkpoint does not fit the model or its trainable parameters ({first[:300]})") from None


# ---- exported weights ------------------------------------------------------------------------------------
def export_weights(folder: str | Path, config: Any, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write ``folder`` (config.json + model.safetensors) as a whole: into a temporary folder,
    then swapped in place of the old one."""
    from openofa.checkpoints import save_pretrained

    return _write_whole(folder, lambda tmp: save_pretrained(
        tmp, config, {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}))


def export_adapter(folder: str | Path, cfg: Any, model: Any, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write ``folder`` as an adapter folder (``openofa.petl.files``) holding only the weights the
    recipe's ``petl`` methods train, taken from ``state_dict``; written whole like :func:`export_weights`."""
    from openofa.petl.files import save_adapter
    from openofa.train.model import trained_tasks

    return _write_whole(folder, lambda tmp: save_adapter(model, cfg.petl, tmp, base_model=cfg.init_from,
                                                         tasks=trained_tasks(cfg), state_dict=state_dict))


def export_merged(folder: str | Path, model: Any) -> Path:
    """The whole model with its LoRA updates merged into the weights (adapters and prefixes stay as
    modules the config records) as a ``save_pretrained`` folder."""
    import copy

    from openofa.petl import merge_lora

    merged = copy.deepcopy(model)
    merge_lora(merged)
    return export_weights(folder, merged.config, merged.state_dict())


def _write_whole(folder: str | Path, write: Any) -> Path:
    """Run ``write(tmp)`` into a temporary folder, then swap it in place of ``folder``."""
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{folder.name}.{os.getpid()}.tmp"
    old = parent / f".{folder.name}.{os.getpid()}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(parent)
    return folder
