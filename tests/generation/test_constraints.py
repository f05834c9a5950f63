import math
import random

import pytest
import torch

from openofa.generation import GenerationConfig, SequenceGenerator, TokenRange, Trie, score_candidates
from ofa_gen_fakes import FakeModel, reference_generate

ANSWERS = [[5], [6], [7, 8, 9], [7, 8], [7, 10], [11, 5, 6]]
SRC = torch.tensor([[0, 5, 6, 7, 2], [0, 9, 4, 2, 1]])


def test_next_tokens_rules():
    trie = Trie.from_answers(ANSWERS, bos=0, eos=2)
    assert sorted(trie.next_tokens([])) == [0]
    assert sorted(trie.next_tokens([0])) == [5, 6, 7, 11]
    assert sorted(trie.next_tokens([0, 7])) == [8, 10]
    assert sorted(trie.next_tokens([0, 7, 8])) == [2, 9]
    assert trie.next_tokens([0, 7, 8, 2]) == []  # end of a stored sequence: nothing allowed
    assert trie.next_tokens([0, 4]) == [2]  # left the tree: only eos
    assert trie.next_tokens([0, 4, 5, 6]) == [2]
    assert trie.next_tokens([3]) == [2]


def test_batched_mask_matches_next_tokens():
    rng = random.Random(0)
    answers = [[rng.randrange(4, 40) for _ in range(rng.randrange(1, 5))] for _ in range(60)]
    trie = Trie.from_answers(answers)
    prefixes = [[0] + a[:k] for a in answers for k in range(len(a) + 2)]
    prefixes += [[0] + a + [2] for a in answers] + [[0, 45], [1], [], [0, 3, 3]]
    prefixes += [[0] + [rng.randrange(0, 50) for _ in range(rng.randrange(0, 4))] for _ in range(100)]
    mask = trie.allowed_mask(prefixes, 50)
    for p, row in zip(prefixes, mask):
        want = torch.zeros(50, dtype=torch.bool)
        want[trie.next_tokens(p)] = True
        assert torch.equal(row, want), p
    # tensor input (equal-length prefixes) gives the same
    same_len = torch.tensor([p for p in prefixes if len(p) == 3])
    assert torch.equal(trie.allowed_mask(same_len, 50), trie.allowed_mask(same_len.tolist(), 50))


def test_incremental_states_and_insert_after_use():
    trie = Trie([[0, 4, 2]], eos=2)
    s = trie.advance(trie.root(2), torch.tensor([0, 0]))
    assert trie.mask(s, 8)[0].nonzero().view(-1).tolist() == [4]
    trie.insert([0, 5, 6, 2])  # tables are rebuilt after an insert
    s = trie.advance(trie.root(1), torch.tensor([0]))
    assert trie.mask(s, 8)[0].nonzero().view(-1).tolist() == [4, 5]
    dead = trie.advance(s, torch.tensor([100]))
    assert trie.mask(dead, 8)[0].nonzero().view(-1).tolist() == [2]
    assert trie.mask(trie.advance(dead, torch.tensor([2])), 8)[0].nonzero().view(-1).tolist() == [2]
    with pytest.raises(ValueError):
        trie.mask(s, 5)  # token 6 does not fit a 5-token vocabulary


def test_token_range():
    r = TokenRange.parse("10,14")
    assert r == TokenRange(10, 14) == TokenRange.parse((10, 14))
    logits = torch.zeros(2, 20)
    r.apply_(logits)
    allowed = torch.isfinite(logits[0]).nonzero().view(-1).tolist()
    assert allowed == [0, 1, 2, 3, 10, 11, 12, 13]
    assert torch.equal(r.mask(20), torch.isfinite(logits[0]))
    with pytest.raises(ValueError):
        TokenRange(2, 10)

    class Cfg:
        vocab_size, bin_0 = 59457, 58457

    assert TokenRange.bins(Cfg) == TokenRange(58457, 59457)


def test_trie_generation_enumerates_answers_with_their_scores():
    model = FakeModel(vocab_size=16, seed=1)
    trie = Trie.from_answers(ANSWERS)
    cfg = GenerationConfig(beam_size=len(ANSWERS), max_len_b=10, normalize_scores=False)
    hyps = SequenceGenerator(cfg).generate(model, SRC, constraints=trie)
    scored = score_candidates(model, SRC, ANSWERS, constraints=trie)
    for b, hs in enumerate(hyps):
        got = {tuple(h.tokens.tolist()[:-1]): h.score for h in hs}
        assert set(got) == {tuple(a) for a in ANSWERS}
        for a, s in zip(ANSWERS, scored[b].tolist()):
            assert got[tuple(a)] == pytest.approx(s, abs=1e-5)


@pytest.mark.parametrize("beam", [1, 2, 4])
def test_trie_generation_matches_reference(beam):
    model = FakeModel(vocab_size=16, seed=2)
    trie = Trie.from_answers(ANSWERS)
    settings = dict(beam_size=beam, max_len_b=10, normalize_scores=False)
    hyps = SequenceGenerator(**settings).generate(model, SRC, constraints=trie)
    ref = reference_generate(model, SRC, trie=trie, **settings)
    for hs, rs in zip(hyps, ref):
        assert [h.tokens.tolist() for h in hs] == [r[0] for r in rs]
        assert [h.score for h in hs] == pytest.approx([r[1] for r in rs], abs=1e-5)


def test_trie_with_prefix_tokens_matches_reference():
    # the trie applies to the tokens after the (per-sentence) prefix
    model = FakeModel(vocab_size=16, seed=3)
    trie = Trie.from_answers(ANSWERS)
    prefix = torch.tensor([[12, 13], [14, 1]])
    settings = dict(beam_size=3, max_len_b=10, normalize_scores=False)
    hyps = SequenceGenerator(**settings).generate(model, SRC, prefix_tokens=prefix, constraints=trie)
    ref = reference_generate(model, SRC, trie=trie, prefix_tokens=prefix, **settings)
    for hs, rs, p in zip(hyps, ref, [[12, 13], [14]]):
        assert [h.tokens.tolist() for h in hs] == [r[0] for r in rs]
        for h in hs:
            t = h.tokens.tolist()
            assert t[: len(p)] == p and t[len(p):-1] in ANSWERS


def test_range_generation_stays_in_range():
    model = FakeModel(vocab_size=30, seed=4)
    cfg = GenerationConfig(beam_size=3, min_len=4, max_len_b=4, constraint_range="24,30", no_repeat_ngram_size=3)
    for hs in SequenceGenerator(cfg).generate(model, SRC):
        for h in hs:
            t = h.tokens.tolist()
            assert len(t) == 5 and t[-1] == 2
            assert all(x in (0, 3) or 24 <= x < 30 for x in t[:-1])


def test_range_applies_after_a_prefix_of_other_tokens():
    # grounding with the prompt as decoder prefix: text tokens are forced, then only location tokens;
    # the prefix repeats a trigram, which must not block its own forced tokens
    model = FakeModel(vocab_size=30, seed=5)
    prefix = torch.tensor([[7, 8, 9, 7, 8, 9], [10, 11, 1, 1, 1, 1]])
    settings = dict(beam_size=3, no_repeat_ngram_size=3, normalize_scores=False)
    hyps = []
    for b, n in enumerate([6, 2]):  # one generate per prefix length, lengths counted after the prefix
        cfg = GenerationConfig(min_len=n + 4, max_len_b=n + 4, constraint_range="24,30", **settings)
        hyps.append(SequenceGenerator(cfg).generate(model, SRC[b:b + 1], prefix_tokens=prefix[b:b + 1, :n])[0])
        ref = reference_generate(model, SRC[b:b + 1], prefix_tokens=prefix[b:b + 1, :n], min_len=n + 4,
                                 max_len_b=n + 4, constraint_range=(24, 30), **settings)[0]
        assert [h.tokens.tolist() for h in hyps[-1]] == [r[0] for r in ref]
        assert [h.score for h in hyps[-1]] == pytest.approx([r[1] for r in ref], abs=1e-5)
    for hs, p in zip(hyps, [[7, 8, 9, 7, 8, 9], [10, 11]]):
        assert hs and all(math.isfinite(h.score) for h in hs)
        for h in hs:
            t = h.tokens.tolist()
            assert t[: len(p)] == p and t[-1] == 2 and len(t) == len(p) + 5
            assert all(x in (0, 3) or 24 <= x < 30 for x in t[len(p):-1])  # the range keeps 0..3
