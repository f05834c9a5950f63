"""The model shipped inside the package, used when no model is given (``openofa.load()``, ``ofa``).

``mini/`` holds ``config.json`` + ``model.safetensors`` (float16, under 15 MB): the project's own
small model (:mod:`openofa.mini`; :func:`openofa.mini.weights.export_bundled` writes it).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLED", "bundled_model"]

BUNDLED = Path(__file__).resolve().parent / "mini"


def bundled_model() -> Path | None:
    """Folder of the bundled model, or None if this installation has none."""
    return BUNDLED if (BUNDLED / "model.safetensors").is_file() else None
