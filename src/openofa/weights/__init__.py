"""The models shipped inside the package, found by name.

* ``mini/`` (``"mini"``): the project's own small model (:mod:`openofa.mini`), used when no model
  is given (``openofa.load()``, ``ofa``); :func:`openofa.mini.weights.export_bundled` writes it.
* ``mini_draw/`` (``"mini-draw"``): its drawing model, text to an 8x8 grid of codes of its own VQ
  tokenizer (``mini_draw/vqgan/``), used by ``ofa imagine`` when no model is given
  (:mod:`openofa.mini.draw`); :func:`openofa.mini.weights.export_drawing` writes it.
* ``mini_read/`` (``"mini-read"``): its reading model, images of a word or number to their
  characters, used by ``ofa ocr`` when no model is given (:mod:`openofa.mini.read`);
  :func:`openofa.mini.weights.export_reading` writes it.

Each folder holds ``config.json`` + ``model.safetensors`` (float16); together with the text
vocabularies the package data stays under 25 MB.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLED", "BUNDLED_DRAW", "BUNDLED_READ", "BUNDLED_MODELS", "TASK_MODELS", "bundled_model", "bundled_name"]

_HERE = Path(__file__).resolve().parent
BUNDLED = _HERE / "mini"
BUNDLED_DRAW = _HERE / "mini_draw"
BUNDLED_READ = _HERE / "mini_read"
#: name -> folder of every shipped model
BUNDLED_MODELS = {"mini": BUNDLED, "mini-draw": BUNDLED_DRAW, "mini-read": BUNDLED_READ}
#: the shipped model a task uses when none is given (others: "mini")
TASK_MODELS = {"imagine": "mini-draw", "ocr": "mini-read"}


def bundled_model(name: str = "mini") -> Path | None:
    """Folder of the shipped model ``name``, or None if this installation lacks it."""
    folder = BUNDLED_MODELS.get(name)
    return folder if folder is not None and (folder / "model.safetensors").is_file() else None


def bundled_name(path) -> str | None:
    """The name of the shipped model at ``path``, or None when ``path`` is not one."""
    if path is None:
        return None
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    return next((name for name, folder in BUNDLED_MODELS.items() if resolved == folder), None)
