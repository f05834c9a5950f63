"""Generation of ofa_tiny (recipe weights) against the original SequenceGenerator's outputs."""

import json

import numpy as np
import pytest
import torch

from openofa.generation import GenerationConfig, SequenceGenerator, TokenRange, Trie


def _load(golden, name):
    data = json.loads((golden / f"generate_{name}.json").read_text())
    pre = np.load(golden / "preprocess.npz")
    size = data["image_size"]
    images = torch.stack([torch.from_numpy(pre[f"caption{size}/{img}"]) for img in data["images"]])
    rows = data["src_tokens"]
    width = max(len(r) for r in rows)
    src = torch.full((len(rows), width), 1, dtype=torch.long)
    for i, r in enumerate(rows):
        src[i, : len(r)] = torch.tensor(r)
    masks = torch.tensor(data["patch_masks"])
    return data, src, images, masks


def _config(settings):
    rng = None
    if settings["constraint_start"] is not None:
        rng = (settings["constraint_start"], settings["constraint_end"])
    return GenerationConfig(
        beam_size=settings["beam_size"],
        max_len_a=settings["max_len_a"],
        max_len_b=settings["max_len_b"],
        min_len=settings["min_len"],
        max_len=settings["max_len"],
        normalize_scores=settings["normalize_scores"],
        len_penalty=settings["len_penalty"],
        unk_penalty=settings["unk_penalty"],
        temperature=settings["temperature"],
        no_repeat_ngram_size=settings["no_repeat_ngram_size"],
        constraint_range=rng,
    )


def _compare(hyps, expected):
    assert len(hyps) == len(expected)
    for i, (got, want) in enumerate(zip(hyps, expected)):
        assert len(got) == len(want), f"input {i}: n-best size"
        for j, (g, w) in enumerate(zip(got, want)):
            where = f"input {i} hypothesis {j}"
            torch.testing.assert_close(
                g.positional_scores, torch.tensor(w["positional_scores"]), atol=1e-4, rtol=0, msg=where
            )
            assert g.tokens.tolist() == w["tokens"], where
            assert g.score == pytest.approx(w["score"], abs=1e-4), where


@pytest.mark.parametrize("name", ["caption_beam5", "caption_greedy", "refcoco_bins_beam5"])
def test_golden_generation(golden, tiny_model, name):
    data, src, images, masks = _load(golden, name)
    cfg = _config(data["settings"])
    hyps = SequenceGenerator(cfg).generate(tiny_model, src, None, patch_images=images, patch_masks=masks)
    _compare(hyps, data["hypos"])


def test_golden_vqa_trie(golden, tiny_model):
    data, src, images, masks = _load(golden, "vqa_trie_beam5")
    cfg = _config(data["settings"])
    trie = Trie.from_answers(data["answer_ids"], bos=0, eos=2)
    prefix = torch.zeros(src.size(0), 0, dtype=torch.long)
    lengths = torch.tensor(data["src_lengths"])
    hyps = SequenceGenerator(cfg).generate(
        tiny_model, src, lengths, patch_images=images, patch_masks=masks, prefix_tokens=prefix, constraints=trie
    )
    _compare(hyps, data["hypos"])
    # the same without an (empty) prefix
    again = SequenceGenerator(cfg).generate(tiny_model, src, lengths, patch_images=images, patch_masks=masks,
                                            constraints=trie)
    _compare(again, data["hypos"])


def test_golden_refcoco_range_object(golden, tiny_model):
    data, src, images, masks = _load(golden, "refcoco_bins_beam5")
    cfg = _config(data["settings"])
    cfg.constraint_range = TokenRange.bins(tiny_model.config)
    hyps = SequenceGenerator(cfg, nbest=1).generate(tiny_model, src, patch_images=images, patch_masks=masks)
    assert [h[0].tokens.tolist() for h in hyps] == [h[0]["tokens"] for h in data["hypos"]]
