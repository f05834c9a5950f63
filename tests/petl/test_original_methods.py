"""The original's adapters, prefix tuning and BitFit: keys, trained parameters and outputs equal
the original's (fixtures in tests/fixtures/petl, OFA-tiny with recipe weights)."""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from support import GOLDEN

PETL = Path(__file__).parents[1] / "fixtures" / "petl"
METHODS = ("baseline", "adapter", "prefix", "prefix_projection", "encoder_prefix_only", "decoder_prefix_only",
           "bitfit")
TOL = 1e-4


@lru_cache(maxsize=None)
def meta() -> dict:
    return json.loads((PETL / "petl.json").read_text())


@lru_cache(maxsize=None)
def arrays() -> dict:
    z = np.load(PETL / "petl_forward.npz")
    return {k: torch.from_numpy(z[k]) for k in z.files}


@lru_cache(maxsize=None)
def golden_batch() -> dict:
    z = np.load(GOLDEN / "forward_ofa_tiny.npz")
    return {k: torch.from_numpy(z[k]) for k in ("src_tokens", "patch_images", "patch_masks", "prev_output_tokens")}


def config_of(method: str):
    from openofa.config import get_config

    flags = {k: v for k, v in meta()["methods"][method]["extra_args"].items() if k != "bitfit"}
    return dataclasses.replace(get_config("tiny"), **flags)


@lru_cache(maxsize=None)
def model_of(method: str):
    """OFA-tiny built from the method's flags, loaded strictly with recipe weights for every key."""
    from openofa.checkpoints.recipe import recipe_state_dict
    from openofa.model import build_model

    model = build_model(config_of(method))
    model.load_state_dict(recipe_state_dict(model.config), strict=True)
    return model.eval()


def _close(actual, expected, what):
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= TOL + 1e-4 * expected.abs().max().item(), f"{what}: max abs diff {diff}"


@pytest.mark.parametrize("method", METHODS)
def test_added_keys_equal_the_originals(method):
    from openofa.checkpoints.keys import official_keys

    m = meta()["methods"][method]
    base = set(official_keys(config_of("baseline")))
    ours = official_keys(config_of(method))
    added = [[k, list(s)] for k, s in ours.items() if k not in base]
    assert added == [[k, s] for k, s, _ in m["added_keys"]]
    assert sum(int(np.prod(s)) for _, s in added) == m["num_added_elements"]


@pytest.mark.parametrize("method", METHODS)
@torch.no_grad()
def test_outputs_equal_the_originals(method):
    m, ref, batch = meta()["methods"][method], arrays(), golden_batch()
    model = model_of(method)
    rows = slice(0, 1) if m["rows"] == "row0" else slice(None)
    src, img = batch["src_tokens"][rows], batch["patch_images"][rows]
    masks, prev = batch["patch_masks"][rows], batch["prev_output_tokens"][rows]
    if m["rows"] == "row0":  # row 0 is the longest: drop the all-pad columns the batch adds
        src = src[:, : int(src.ne(1).sum())]
    valid = prev.ne(1)

    enc = model.encode(src, None, img, masks)
    assert torch.equal(enc.padding_mask, ref[f"{method}/encoder_padding_mask"])
    _close(enc.hidden[..., :32], ref[f"{method}/encoder_out_first32"].transpose(0, 1), "encoder")

    logits = model.decode(prev, enc)
    ids = ref["spread_vocab_indices"]
    _close(logits[..., ids][valid], ref[f"{method}/logits_spread"][valid], "logits")
    top_ids = ref[f"{method}/top20_indices"]
    _close(logits.gather(-1, top_ids)[valid], ref[f"{method}/top20_values"][valid], "top-20 logits")
    fixed = torch.linspace(0, logits.shape[-1] - 1, 50).long()
    _close(logits.log_softmax(-1)[..., fixed][valid], ref[f"{method}/log_softmax_at_fixed_indices"][valid],
           "log-softmax")

    cache = model.init_cache(enc)
    steps = torch.stack([model.decode_step(prev[:, : t + 1], cache) for t in range(prev.shape[1])], 1)
    _close(steps[..., ids][valid], ref[f"{method}/incremental_spread"][valid], "incremental logits")


@pytest.mark.parametrize("method", ["prefix", "prefix_projection", "decoder_prefix_only"])
@torch.no_grad()
def test_decoder_prefix_runs_on_padded_targets(method):
    """The original asserts on a decoder prefix with padded targets; here every row of the padded
    golden batch equals that row run alone, teacher-forced and step by step."""
    assert "key_padding_mask.size(1) == k.size(1)" in " ".join(meta()["methods"][method]["forward_error_full_golden_batch"])
    model, b = model_of(method), golden_batch()
    prev = b["prev_output_tokens"]
    assert prev.eq(1).any()
    enc = model.encode(b["src_tokens"], None, b["patch_images"], b["patch_masks"])
    both = model.decode(prev, enc)
    cache = model.init_cache(enc)
    steps = torch.stack([model.decode_step(prev[:, : t + 1], cache) for t in range(prev.shape[1])], 1)
    for r in range(prev.shape[0]):
        n = int(prev[r].ne(1).sum())
        src = b["src_tokens"][r:r + 1]
        one_enc = model.encode(src[:, : int(src.ne(1).sum())], None, b["patch_images"][r:r + 1],
                               b["patch_masks"][r:r + 1])
        alone = model.decode(prev[r:r + 1, :n], one_enc)[0]
        _close(both[r, :n], alone, f"row {r}")
        _close(steps[r, :n], alone, f"row {r} incremental")


def test_beam_cache_with_a_decoder_prefix_matches_per_row_caches():
    """Beams of one input share the prefix keys like their other cached keys: reordering and
    expanding a grouped cache gives what separate copies give."""
    model, b = model_of("prefix"), golden_batch()
    with torch.no_grad():
        enc = model.encode(b["src_tokens"], None, b["patch_images"], b["patch_masks"])
        grouped, flat = model.init_cache(enc, beam_size=3), model.init_cache(enc.repeat_interleave(3))
        tokens = torch.zeros(6, 1, dtype=torch.long)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            _close(model.decode_step(tokens, grouped), model.decode_step(tokens, flat), "grouped vs flat")
            order = torch.cat([torch.randperm(3, generator=gen) + i * 3 for i in range(2)])
            grouped.reorder(order)
            flat.reorder(order)
            tokens = torch.cat([tokens[order], torch.randint(4, 500, (6, 1), generator=gen)], 1)


@torch.no_grad()
def test_decoder_prefix_in_image_code_mode_cached_equals_teacher_forced():
    """Rows that decode image codes (text-to-image) take the prefixes too: step by step through
    the cache equals teacher forcing."""
    model = model_of("prefix")
    g = torch.Generator().manual_seed(0)
    enc = model.encode(torch.randint(4, 500, (2, 8), generator=g))
    codes = torch.randint(model.config.code_0, model.config.code_0 + 100, (2, 6), generator=g)
    prev = torch.cat([torch.zeros(2, 1, dtype=torch.long), codes], 1)
    code_masks = torch.tensor([True, True])
    want = model.decode(prev, enc, code_masks=code_masks)
    cache = model.init_cache(enc, code_masks=code_masks)
    got = torch.stack([model.decode_step(prev[:, : t + 1], cache) for t in range(prev.shape[1])], 1)
    _close(got, want, "code mode")
