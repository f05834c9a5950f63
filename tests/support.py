"""Test helpers: where the golden data from the original implementation lives, and models with recipe weights."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

GOLDEN = Path(__file__).parent / "fixtures" / "golden"

torch.set_num_threads(min(2, torch.get_num_threads()))


@lru_cache(maxsize=None)
def recipe_model(size: str):
    """An eval-mode model of ``size`` with the deterministic recipe weights of the golden fixtures."""
    from openofa.checkpoints.recipe import recipe_state_dict
    from openofa.config import get_config
    from openofa.model import build_model

    cfg = get_config(size)
    model = build_model(cfg)
    own = model.state_dict()
    sd = {k: v for k, v in recipe_state_dict(cfg).items() if k in own}
    model.load_state_dict(sd, strict=True)
    return model.eval()


@lru_cache(maxsize=None)
def archs() -> dict:
    return json.loads((GOLDEN / "archs.json").read_text())
