"""Generation of ofa_tiny (recipe weights) against the original SequenceGenerator's outputs."""

import pytest
import torch

from support import golden_generation_config, load_golden_generation
from openofa.generation import SequenceGenerator, TokenRange, Trie


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
def test_golden_generation(tiny_model, name):
    data, src, images, masks = load_golden_generation(name)
    cfg = golden_generation_config(data["settings"])
    hyps = SequenceGenerator(cfg).generate(tiny_model, src, None, patch_images=images, patch_masks=masks)
    _compare(hyps, data["hypos"])


def test_golden_vqa_trie(tiny_model):
    data, src, images, masks = load_golden_generation("vqa_trie_beam5")
    cfg = golden_generation_config(data["settings"])
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


def test_golden_refcoco_range_object(tiny_model):
    data, src, images, masks = load_golden_generation("refcoco_bins_beam5")
    cfg = golden_generation_config(data["settings"])
    cfg.constraint_range = TokenRange.bins(tiny_model.config)
    hyps = SequenceGenerator(cfg, nbest=1).generate(tiny_model, src, patch_images=images, patch_masks=masks)
    assert [h[0].tokens.tolist() for h in hyps] == [h[0]["tokens"] for h in data["hypos"]]
