"""Exporting the small model into the package.

``openofa/weights/mini/`` (:mod:`openofa.weights`) holds the ``mini`` size trained by
``recipes/scenes_mini.yaml`` on procedural scenes (:mod:`openofa.mini.scenes`), in float16, with
the task settings it was trained with; it is what ``openofa.load()`` and every ``ofa`` command
use when no model is given. :func:`export_bundled` writes it from a finished run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from openofa.weights import BUNDLED

__all__ = ["MINI_TASK_SETTINGS", "export_bundled"]

#: inference settings the small model was trained with (saved into its config.extra["task"])
MINI_TASK_SETTINGS = {
    "patch_image_size": 128,
    "max_image_size": 128,
    "prompt_type": "prev_output",
    "ground_prompt_type": "prev_output",
    "generation": {"caption": {"max_len_b": 40}},
    "tasks": ["caption", "vqa", "ground", "detect"],
}


def export_bundled(run_folder: str | Path, out: str | Path = BUNDLED) -> Path:
    """Copy trained weights (a run's ``final/`` folder, our format) into the package as float16,
    with the task settings the model was trained with."""
    import dataclasses

    from openofa.checkpoints import load_checkpoint, save_pretrained

    config, state_dict, _ = load_checkpoint(run_folder)
    extra = {**config.extra, "task": MINI_TASK_SETTINGS}
    config = dataclasses.replace(config, extra=extra, patch_image_size=MINI_TASK_SETTINGS["patch_image_size"])
    return save_pretrained(out, config, state_dict, dtype=torch.float16)
