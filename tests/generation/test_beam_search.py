import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from openofa.generation import GenerationConfig, SequenceGenerator
from ofa_gen_fakes import FakeModel, reference_generate

SRC = torch.tensor([[0, 5, 6, 7, 2], [0, 9, 4, 2, 1], [0, 11, 12, 13, 2]])


def assert_same(hyps, ref, atol=1e-4):
    assert len(hyps) == len(ref)
    for hs, rs in zip(hyps, ref):
        assert len(hs) == len(rs)
        for h, (toks, score, pos) in zip(hs, rs):
            assert h.tokens.tolist() == toks
            assert h.score == pytest.approx(score, abs=atol)
            torch.testing.assert_close(h.positional_scores, torch.tensor(pos, dtype=torch.float32), atol=atol, rtol=0)


SETTINGS = [
    dict(beam_size=5, max_len_b=6),
    dict(beam_size=1, max_len_b=7),
    dict(beam_size=3, max_len_b=5, no_repeat_ngram_size=2),
    dict(beam_size=4, max_len_b=8, no_repeat_ngram_size=3, min_len=3),
    dict(beam_size=5, max_len_b=6, normalize_scores=False),
    dict(beam_size=4, max_len_b=6, len_penalty=0.5, unk_penalty=-1.5),
    dict(beam_size=3, max_len_b=6, temperature=0.7, no_repeat_ngram_size=1),
    dict(beam_size=2, max_len_a=1.0, max_len_b=1),
    dict(beam_size=5, max_len_b=5, constraint_range=(18, 22)),
    dict(beam_size=23, max_len_b=3),  # beam capped at vocab - 1
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(settings, seed):
    model = FakeModel(vocab_size=24, seed=seed, bias=_eos_bias(24, 1.0))
    hyps = SequenceGenerator(GenerationConfig(**settings)).generate(model, SRC)
    assert_same(hyps, reference_generate(model, SRC, **settings))


def _eos_bias(vocab, eos_bias):
    b = torch.zeros(vocab)
    b[2] = eos_bias
    return b


def test_greedy_equals_argmax_rollout():
    model = FakeModel(vocab_size=30, seed=3)
    L = 9
    hyps = SequenceGenerator(beam_size=1, max_len_b=L, min_len=1).generate(model, SRC)
    sents = model.encode(SRC).sent.tolist()
    for b, sh in enumerate(sents):
        prefix, total = [0], []
        for step in range(L + 1):
            lp = F.log_softmax(model.logits_for(sh, prefix), -1)
            lp[1] = -math.inf
            if step < 1:
                lp[2] = -math.inf
            if step == L:
                tok = 2
            else:
                tok = int(lp.argmax())
            total.append(lp[tok].item())
            prefix.append(tok)
            if tok == 2:
                break
        (h,) = hyps[b]
        assert h.tokens.tolist() == prefix[1:]
        assert h.score == pytest.approx(sum(total) / len(total), abs=1e-5)


def test_exhaustive_top_k_when_scores_are_additive():
    # logits independent of the history: beam search with k beams returns the exact top k
    V, L, k = 7, 3, 4
    model = FakeModel(vocab_size=V, seed=5, history=False)
    cfg = GenerationConfig(beam_size=k, max_len_b=L, min_len=L, normalize_scores=False)
    src = SRC[:2]
    hyps = SequenceGenerator(cfg).generate(model, src)
    for b, sh in enumerate(model.encode(src).sent.tolist()):
        per_pos = []
        for p in range(L + 1):
            lp = F.log_softmax(model.logits_for(sh, [0] * (p + 1)), -1)
            per_pos.append(lp)
        body = [t for t in range(V) if t not in (1, 2)]
        every = []
        for seq in itertools.product(body, repeat=L):
            s = sum(per_pos[p][t].item() for p, t in enumerate(seq)) + per_pos[L][2].item()
            every.append((s, list(seq) + [2]))
        every.sort(key=lambda x: -x[0])
        assert [h.tokens.tolist() for h in hyps[b]] == [t for _, t in every[:k]]
        assert [h.score for h in hyps[b]] == pytest.approx([s for s, _ in every[:k]], abs=1e-4)


def _has_repeat(seq, n):
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeat_ngram(n):
    bias = torch.zeros(20)
    bias[7] = 6.0  # the model loves token 7
    bias[8] = 5.0
    model = FakeModel(vocab_size=20, seed=2, bias=bias)
    hyps = SequenceGenerator(beam_size=4, max_len_b=10, no_repeat_ngram_size=n).generate(model, SRC)
    for hs in hyps:
        for h in hs:
            assert not _has_repeat([0] + h.tokens.tolist()[:-1], n)
    free = SequenceGenerator(beam_size=4, max_len_b=10).generate(model, SRC)
    assert any(_has_repeat([0] + h.tokens.tolist()[:-1], n) for hs in free for h in hs)


def test_lengths_pad_and_eos():
    bias = torch.zeros(24)
    bias[2] = 4.0  # eos likely early
    bias[1] = 10.0  # pad very likely, must never appear
    model = FakeModel(vocab_size=24, seed=4, bias=bias)
    hyps = SequenceGenerator(beam_size=3, max_len_b=6, min_len=3).generate(model, SRC)
    for hs in hyps:
        assert len(hs) == 3
        scores = [h.score for h in hs]
        assert scores == sorted(scores, reverse=True)
        for h in hs:
            t = h.tokens.tolist()
            assert t[-1] == 2 and 2 not in t[:-1] and 1 not in t
            assert 4 <= len(t) <= 7
            assert h.positional_scores.shape == h.tokens.shape
            assert h.score == pytest.approx(h.positional_scores.sum().item() / len(t), abs=1e-5)


def test_hard_max_len_and_nbest():
    model = FakeModel(vocab_size=24, seed=6, bias=_eos_bias(24, -20.0))
    hyps = SequenceGenerator(beam_size=4, max_len_b=50, max_len=5, nbest=2).generate(model, SRC)
    for hs in hyps:
        assert len(hs) == 2
        assert all(len(h.tokens) == 6 for h in hs)  # forced eos after 5 tokens
    with pytest.raises(ValueError):
        SequenceGenerator(max_len_b=3, min_len=4).generate(model, SRC)


def test_default_cap_follows_model_positions():
    model = FakeModel(vocab_size=24, seed=6, bias=_eos_bias(24, -20.0), max_positions=12)
    (hs,) = SequenceGenerator(beam_size=2, max_len_b=200).generate(model, SRC[:1])
    assert len(hs[0].tokens) == 12  # 11 tokens + eos: positions 0..11 were fed


def test_prefix_tokens_forced():
    model = FakeModel(vocab_size=24, seed=7)
    prefix = torch.tensor([[9, 10, 11], [4, 5, 1]])  # second row: shorter prefix, pad-filled
    settings = dict(beam_size=3, max_len_b=6)
    hyps = SequenceGenerator(**settings).generate(model, SRC[:2], prefix_tokens=prefix)
    for hs, p in zip(hyps, prefix.tolist()):
        p = [t for t in p if t != 1]
        for h in hs:
            assert h.tokens.tolist()[: len(p)] == p
    assert_same(hyps, reference_generate(model, SRC[:2], prefix_tokens=prefix, **settings))


def test_finished_sentences_leave_the_batch():
    # sentence 0 ends at once, sentence 1 runs to the limit
    model = FakeModel(vocab_size=24, seed=8)
    src = torch.tensor([[0, 5, 2], [0, 6, 2]])
    sents = model.encode(src).sent
    orig = model.decode_step

    def decode_step(tokens, cache):
        out = orig(tokens, cache)
        out[cache.sent == sents[0], 2] += 50.0
        out[cache.sent == sents[1], 2] -= 50.0
        return out

    model.decode_step = decode_step
    model.encode_calls = 0
    hyps = SequenceGenerator(beam_size=2, max_len_b=8).generate(model, src)
    assert all(len(h.tokens) == 2 for h in hyps[0])
    assert all(len(h.tokens) == 9 for h in hyps[1])
    sizes = model.last_cache.sizes
    assert sizes[0] == 4 and sizes[-1] == 2  # rows dropped once sentence 0 finished
    assert model.encode_calls == 1



@pytest.mark.parametrize("step", [0, 3])
@pytest.mark.parametrize("beam, vocab", [(4, 300), (1, 300), (4, 6)])
def test_beam_step_ranks_candidates_like_the_whole_vocabulary(step, beam, vocab):
    """The two-stage top-k with scores added to candidates only gives what one top-k over
    (beam x vocab) of lprob + score gives, NaN rows (fully masked) included."""
    from openofa.generation.constraints import NEG_INF
    from openofa.generation.generator import _beam_step

    g = torch.Generator().manual_seed(step * 100 + beam + vocab)
    bsz = 3
    logits = torch.randn(bsz * beam, vocab, generator=g) * 4
    logits[:, 5 % vocab] = NEG_INF  # a banned token
    if beam > 1:
        logits[1] = NEG_INF  # a fully masked row: its log_softmax is NaN
    lprobs = F.log_softmax(logits, -1).view(bsz, beam, vocab)
    scores = (torch.randn(bsz * beam, 8, generator=g).cumsum(1) * -1).view(bsz, beam, -1)
    got = _beam_step(step, lprobs, scores)
    full = torch.nan_to_num(lprobs, nan=NEG_INF)
    if step == 0:
        full = full[:, :1]
    else:
        full = full + scores[:, :, step - 1].unsqueeze(-1)
    k = min(2 * beam, full.shape[1] * vocab - 1)
    want_scores, idx = torch.topk(full.reshape(bsz, -1), k=k)
    assert torch.equal(got[0], want_scores)  # the same values, bit for bit
    assert torch.equal(got[1], idx % vocab) and torch.equal(got[2], idx // vocab)
