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


GOLDEN_GENERATION_CASES = ("caption_beam5", "caption_greedy", "refcoco_bins_beam5", "vqa_trie_beam5")


def check_golden_tokens(model, name: str, score_atol: float = 0.05) -> None:
    """Run golden generation case ``name`` through ``model``: every hypothesis's tokens must equal
    the original's, the best score within ``score_atol`` (precision changes move scores only)."""
    import numpy as np
    import pytest

    from openofa.generation import GenerationConfig, SequenceGenerator, Trie

    data = json.loads((GOLDEN / f"generate_{name}.json").read_text())
    pre = np.load(GOLDEN / "preprocess.npz")
    images = torch.stack([torch.from_numpy(pre[f"caption256/{n}"]) for n in data["images"]])
    width = max(len(r) for r in data["src_tokens"])
    src = torch.tensor([r + [1] * (width - len(r)) for r in data["src_tokens"]])
    s = data["settings"]
    rng = (s["constraint_start"], s["constraint_end"]) if s["constraint_start"] is not None else None
    gen = SequenceGenerator(GenerationConfig(
        beam_size=s["beam_size"], max_len_a=s["max_len_a"], max_len_b=s["max_len_b"], min_len=s["min_len"],
        normalize_scores=s["normalize_scores"], no_repeat_ngram_size=s["no_repeat_ngram_size"],
        constraint_range=rng))
    trie = Trie.from_answers(data["answer_ids"]) if "answer_ids" in data else None
    out = gen.generate(model, src, None, images, torch.tensor(data["patch_masks"]), constraints=trie)
    for got, want in zip(out, data["hypos"]):
        assert [h.tokens.tolist() for h in got] == [w["tokens"] for w in want], name
        assert got[0].score == pytest.approx(want[0]["score"], abs=score_atol), name
