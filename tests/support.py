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


def load_golden_generation(name: str):
    """Golden generation case ``name``: its JSON data, right-padded source tokens, images, patch masks."""
    import numpy as np

    data = json.loads((GOLDEN / f"generate_{name}.json").read_text())
    pre = np.load(GOLDEN / "preprocess.npz")
    images = torch.stack([torch.from_numpy(pre[f"caption{data['image_size']}/{n}"]) for n in data["images"]])
    rows = data["src_tokens"]
    src = torch.full((len(rows), max(len(r) for r in rows)), 1, dtype=torch.long)
    for i, r in enumerate(rows):
        src[i, : len(r)] = torch.tensor(r)
    return data, src, images, torch.tensor(data["patch_masks"])


def golden_generation_config(settings: dict):
    """The original's decoding settings of a golden case as our GenerationConfig."""
    from openofa.generation import GenerationConfig

    rng = None
    if settings["constraint_start"] is not None:
        rng = (settings["constraint_start"], settings["constraint_end"])
    return GenerationConfig(
        beam_size=settings["beam_size"], max_len_a=settings["max_len_a"], max_len_b=settings["max_len_b"],
        min_len=settings["min_len"], max_len=settings["max_len"], normalize_scores=settings["normalize_scores"],
        len_penalty=settings["len_penalty"], unk_penalty=settings["unk_penalty"],
        temperature=settings["temperature"], no_repeat_ngram_size=settings["no_repeat_ngram_size"],
        constraint_range=rng,
    )


def golden_decodes(reference, model, name: str):
    """Golden generation case ``name`` decoded by ``reference`` and by ``model`` with the original's
    settings: ``(trie, want, got, margin)``, where ``want``/``got`` are the two models'
    hypotheses per row and ``margin(i, a, b)`` is ``reference``'s score gap between token lists
    ``a`` and ``b`` of row ``i`` (:func:`openofa.model.int8.tie_margin`)."""
    from openofa.generation import SequenceGenerator, Trie
    from openofa.model.int8 import tie_margin

    data, src, images, masks = load_golden_generation(name)
    settings = data["settings"]
    trie = Trie.from_answers(data["answer_ids"]) if "answer_ids" in data else None
    vocab = None if settings["constraint_start"] is None else (settings["constraint_start"], settings["constraint_end"])
    gen = SequenceGenerator(golden_generation_config(settings))
    with torch.inference_mode():
        want = gen.generate(reference, src, None, images, masks, constraints=trie)
        got = gen.generate(model, src, None, images, masks, constraints=trie)

    def margin(i: int, a: list[int], b: list[int]) -> float:
        return tie_margin(reference, src[i:i + 1], images[i:i + 1], masks[i:i + 1], a, b,
                          settings["normalize_scores"], vocab)

    return trie, want, got, margin


def check_golden_near_ties(reference, model, name: str) -> None:
    """The reduced-precision rule on golden case ``name``: ``model``'s best hypothesis per row is
    ``reference``'s, or ``reference`` scores its own and ``model``'s within
    ``openofa.precision.INT8_TIE_MARGIN`` (a near-tie resolved the other way); best scores within 0.1."""
    import pytest

    from openofa.precision import INT8_TIE_MARGIN

    trie, want, got, margin = golden_decodes(reference, model, name)
    for i, (w, g) in enumerate(zip(want, got)):
        a, b = w[0].tokens.tolist(), g[0].tokens.tolist()
        assert g[0].score == pytest.approx(w[0].score, abs=0.1), name
        if a != b:
            assert trie is None, f"{name}: the answer trie's scores are not re-scored here"
            assert margin(i, a, b) < INT8_TIE_MARGIN, (name, i, margin(i, a, b))


def check_golden_tokens(model, name: str, score_atol: float = 0.05) -> None:
    """Run golden generation case ``name`` through ``model``: every hypothesis's tokens must equal
    the original's, the best score within ``score_atol`` (precision changes move scores only)."""
    import pytest

    from openofa.generation import SequenceGenerator, Trie

    data, src, images, masks = load_golden_generation(name)
    trie = Trie.from_answers(data["answer_ids"]) if "answer_ids" in data else None
    gen = SequenceGenerator(golden_generation_config(data["settings"]))
    out = gen.generate(model, src, None, images, masks, constraints=trie)
    for got, want in zip(out, data["hypos"]):
        assert [h.tokens.tolist() for h in got] == [w["tokens"] for w in want], name
        assert got[0].score == pytest.approx(want[0]["score"], abs=score_atol), name


# ---- checkpoints in the exact layout of released files ---------------------------------------------

RELEASED = Path(__file__).parent / "fixtures" / "released"
RELEASED_KINDS = ("caption_base", "refcoco_base")


@lru_cache(maxsize=None)
def released_layout(kind: str) -> dict:
    """Everything a released file of ``kind`` holds except its tensors, as the original's trainer
    wrote it (``cfg`` with ``cfg['model']`` an argparse.Namespace once rebuilt, key/shape/dtype lists,
    optimizer history, extra state, digests)."""
    return json.loads((RELEASED / f"ckpt_layout_{kind}.json").read_text())


def released_fixture(kind: str, name: str):
    """(JSON, npz) of the original's evaluation of a released-layout file of ``kind``."""
    import numpy as np

    base = RELEASED / f"{kind}__{name}"
    return json.loads(base.with_suffix(".json").read_text()), np.load(base.with_suffix(".npz"))


def released_state_dict(kind: str):
    """The state dict a released file of ``kind`` stores for the recipe weights: values rounded to
    float16 and stored as float32 (``--fp16`` training, ``move_to_cpu`` on save), the three tied
    embedding keys as three separate tensors, the computed index buffers as the original made them."""
    from collections import OrderedDict

    import numpy as np

    from openofa.checkpoints.keys import EMBED_KEY, TIED_KEYS
    from openofa.checkpoints.recipe import recipe_tensor

    layout = released_layout(kind)
    fp16 = bool(layout["cfg"]["common"]["fp16"])
    with np.load(RELEASED / "ofa_buffers.npz") as z:
        buffers = {k: z[k] for k in z.files}
    out: OrderedDict = OrderedDict()
    embed = None
    for key, shape, dtype in layout["model_keys"]:
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "version":
            t = torch.tensor([3.0])
        elif leaf in buffers:
            t = torch.from_numpy(buffers[leaf].astype("int64"))
        else:
            if key == EMBED_KEY or key in TIED_KEYS:
                if embed is None:
                    embed = recipe_tensor(EMBED_KEY, shape)
                t = embed.clone()
            else:
                t = recipe_tensor(key, shape)
            if fp16 and t.is_floating_point():
                t = t.half()
        out[key] = t.to(getattr(torch, dtype))
        assert list(out[key].shape) == list(shape), key
    return out


def write_released_checkpoint(kind: str, path: Path) -> Path:
    """Write ``path`` in the exact layout of the released file of ``kind``, with recipe weights."""
    import argparse

    layout = released_layout(kind)
    cfg = dict(layout["cfg"])
    cfg["model"] = argparse.Namespace(**cfg["model"])  # as the original's trainer saves it
    ckpt = {
        "args": layout["args"],
        "cfg": cfg,
        "model": released_state_dict(kind),
        "criterion": layout["criterion"],
        "optimizer_history": layout["optimizer_history"],
        "task_state": layout["task_state"],
        "extra_state": layout["extra_state"],
        "last_optimizer_state": layout["last_optimizer_state"],
    }
    torch.save(ckpt, path)
    return path
