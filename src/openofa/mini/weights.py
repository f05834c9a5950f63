"""Exporting the small model into the package.

``openofa/weights/mini_draw/`` holds the drawing model of ``recipes/scenes_mini_draw.yaml`` with
its VQ tokenizer (:func:`export_drawing`); ``openofa/weights/mini_read/`` the reading model of
``recipes/scenes_mini_read.yaml`` (:func:`export_reading`).

``openofa/weights/mini/`` (:mod:`openofa.weights`) holds the ``mini`` size trained by
``recipes/scenes_mini.yaml`` on procedural scenes (:mod:`openofa.mini.scenes`), in float16, with
the task settings it was trained with; it is what ``openofa.load()`` and every ``ofa`` command
use when no model is given. :func:`export_bundled` writes it from a finished run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from openofa.weights import BUNDLED, BUNDLED_DRAW, BUNDLED_READ

__all__ = ["MINI_TASK_SETTINGS", "DRAW_TASK_SETTINGS", "READ_TASK_SETTINGS", "export_bundled", "export_drawing",
           "export_reading"]

#: inference settings the small model was trained with (saved into its config.extra["task"])
MINI_TASK_SETTINGS = {
    "patch_image_size": 128,
    "max_image_size": 128,
    "prompt_type": "prev_output",
    "ground_prompt_type": "prev_output",
    "generation": {"caption": {"max_len_b": 40}},
    "tasks": ["caption", "vqa", "ground", "detect"],
}


def export_bundled(run_folder: str | Path, out: str | Path = BUNDLED, settings: dict | None = None) -> Path:
    """Copy trained weights (a run's ``final/`` folder, our format) into the package as float16,
    with the task settings the model was trained with (``settings``, default
    :data:`MINI_TASK_SETTINGS`)."""
    import dataclasses

    from openofa.checkpoints import load_checkpoint, save_pretrained

    settings = MINI_TASK_SETTINGS if settings is None else settings
    config, state_dict, _ = load_checkpoint(run_folder)
    extra = {**config.extra, "task": settings}
    config = dataclasses.replace(config, extra=extra,
                                 patch_image_size=settings.get("patch_image_size", config.patch_image_size))
    return save_pretrained(out, config, state_dict, dtype=torch.float16)


#: task settings of the reading model: its 128-pixel input (:data:`openofa.mini.read.READ_SIZE`)
#: and at most 30 tokens, the original's target length (30 characters); otherwise the original's
#: OCR decoding (beam 5, no n-gram blocking)
READ_TASK_SETTINGS = {"patch_image_size": 128, "generation": {"ocr": {"max_len_b": 30}}, "tasks": ["ocr"]}


def export_reading(run_folder: str | Path, out: str | Path = BUNDLED_READ) -> Path:
    """Copy the reading model (a run's ``final/`` folder) into the package as float16, with
    :data:`READ_TASK_SETTINGS`."""
    return export_bundled(run_folder, out, READ_TASK_SETTINGS)


#: task settings of the drawing model: it decodes as the original's imagine task (top-k 256,
#: temperature 1), which drew the asked colours best among top-k 4..256 and temperatures 0.5..1
#: (docs/imagine.md)
DRAW_TASK_SETTINGS = {"tasks": ["imagine"]}


def export_drawing(model_folder: str | Path, vq_folder: str | Path, out: str | Path = BUNDLED_DRAW) -> Path:
    """Copy the drawing model (a run's ``final/`` folder) into the package as float16, with
    :data:`DRAW_TASK_SETTINGS`, and its VQ tokenizer (``vqgan.safetensors`` + ``model.yaml``, as
    ``task: vq`` writes them) into ``vqgan/`` beside it, where ``ofa imagine`` finds it."""
    import dataclasses

    from safetensors.torch import load_file, save_file

    from openofa.checkpoints import load_checkpoint, save_pretrained
    from openofa.mini.vq import VQ_FOLDER

    vq_in, out = Path(vq_folder), Path(out)
    config, state_dict, _ = load_checkpoint(model_folder)
    config = dataclasses.replace(config, extra={**config.extra, "task": DRAW_TASK_SETTINGS})
    save_pretrained(out, config, state_dict, dtype=torch.float16)
    vq_out = out / VQ_FOLDER
    vq_out.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(vq_in / "vqgan.safetensors"))
    save_file({k: v.to(torch.float16) for k, v in weights.items()}, str(vq_out / "vqgan.safetensors"))
    (vq_out / "model.yaml").write_text((vq_in / "model.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return out
