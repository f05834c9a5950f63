"""The model a recipe trains: its ``init_from`` weights or fresh ones of its size, with the
recipe's ``model_config`` and image preprocessing recorded in the config (so the exported model
carries them)."""

from __future__ import annotations

import dataclasses
from typing import Any

from openofa.errors import OFAError

__all__ = ["build_model_for"]


def build_model_for(cfg) -> Any:
    """The model a recipe starts from: ``init_from`` weights (any checkpoint layout) with the
    recipe's ``model_config`` applied, or fresh weights of size ``model`` (seeded by ``seed``)."""
    import torch

    from openofa.config import get_config
    from openofa.model import build_model, model_from_state_dict

    overrides = dict(cfg.model_config)
    size = get_config(cfg.model)
    image_size = cfg.data.get("patch_image_size") if isinstance(cfg.data, dict) else None
    if image_size:
        overrides.setdefault("patch_image_size", int(image_size))
    torch.manual_seed(cfg.seed)  # identical initial weights in every process
    if not cfg.init_from:
        return _with_petl(build_model(_with_preprocessing(dataclasses.replace(size, **overrides), cfg, {})), cfg)
    from openofa.checkpoints import load_checkpoint

    source = cfg.init_from
    if source == "bundled":  # the model shipped in the package (openofa.weights)
        from openofa.weights import bundled_model

        source = bundled_model()
        if source is None:
            raise OFAError("init_from: bundled, but this installation has no bundled model")
    try:
        config, state_dict, meta = load_checkpoint(source)
    except OFAError as e:
        raise OFAError(f"init_from: {e}") from None
    shape = ("encoder_layers", "decoder_layers", "encoder_embed_dim", "resnet_type")
    expected = {k: overrides.get(k, getattr(size, k)) for k in shape}
    if any(getattr(config, k) != expected[k] for k in shape):
        got = ", ".join(f"{k}={getattr(config, k)}" for k in shape)
        want = ", ".join(f"{k}={v}" for k, v in expected.items())
        raise OFAError(f"init_from {cfg.init_from}: a model with {got}, but the recipe (model: {cfg.model} "
                       f"and model_config) asks for {want}")
    # the file's architecture flags (disable_entangle of a released file ...) stay as they are
    config = _with_preprocessing(dataclasses.replace(config, **overrides), cfg, meta.get("task") or {})
    model = model_from_state_dict(config, state_dict, source=f"init_from {cfg.init_from} (model_config "
                                                              f"{cfg.model_config})")
    return _with_petl(model, cfg)


def _with_petl(model, cfg):
    """The recipe's parameter-efficient methods added (their weights freshly initialised, seeded)."""
    if cfg.petl is None:
        return model
    import torch

    from openofa.petl import apply

    torch.manual_seed(cfg.seed + 1)
    apply(model, cfg.petl)
    return model


def _with_preprocessing(config, cfg, file_settings: dict):
    """``config`` recording how the model is trained, so that the exported model (``final/``,
    ``best/``, ``last.pt``) runs as trained: the image preprocessing (the recipe's data settings
    over those of the file it starts from), the tasks it was trained for (the file's and this
    run's), and per trained task its prompt type (under the task's setting name) and grounding's
    ``max_image_size``."""
    from openofa.checkpoints.load import with_task_settings

    data = cfg.data if isinstance(cfg.data, dict) else {}
    names = ("patch_image_size", "imagenet_default_mean_and_std")
    keep = {k: v for k, v in file_settings.items() if k in names}
    keep.update({k: data[k] for k in names if data.get(k) is not None})
    tasks = trained_tasks(cfg)
    if tasks:
        known = file_settings.get("tasks") if isinstance(file_settings.get("tasks"), (list, tuple)) else []
        keep["tasks"] = list(dict.fromkeys([*known, *tasks]))
        for name in tasks:
            from openofa.tasks import TASKS

            task_data = {**{k: v for k, v in data.items() if not isinstance(v, dict)},
                         **dict(_task_data(data, name) or {})}
            if task_data.get("prompt_type") is not None:
                keep[TASKS[name].prompt_setting] = task_data["prompt_type"]
            if name == "ground" and task_data.get("max_image_size") is not None:
                keep["max_image_size"] = int(task_data["max_image_size"])
    return with_task_settings(config, keep)


def trained_tasks(cfg) -> list[str]:
    """The registered tasks a recipe trains (none for pretraining files and hook tasks)."""
    from openofa.tasks import find_task

    names = list(cfg.mixture) if cfg.task == "mixture" and cfg.mixture else [cfg.task]
    return [t for t in dict.fromkeys(find_task(n) for n in names) if t is not None]


def _task_data(data: dict, task: str) -> dict | None:
    """The recipe's per-task data options of ``task`` (keyed by the task or one of its names)."""
    from openofa.tasks import find_task

    for key, value in data.items():
        if isinstance(value, dict) and find_task(key) == task:
            return value
    return None
