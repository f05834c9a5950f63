import math

import pytest
import torch
import torch.nn.functional as F

from openofa.generation import GenerationConfig, SequenceGenerator
from ofa_gen_fakes import FakeModel

SRC = torch.tensor([[0, 5, 6, 7, 2], [0, 9, 4, 2, 1]])


def _step_lprobs(model, sent, prefix, step, min_len=1, temperature=1.0):
    lp = F.log_softmax(model.logits_for(sent, prefix) / temperature, -1)
    lp[1] = -math.inf
    if step < min_len:
        lp[2] = -math.inf
    return lp


def _tokens(hyps):
    return [[h.tokens.tolist() for h in hs] for hs in hyps]


def test_seeded_sampling_is_reproducible():
    model = FakeModel(vocab_size=24, seed=0)
    cfg = GenerationConfig(beam_size=3, max_len_b=8, sampling=True, seed=123)
    a = SequenceGenerator(cfg).generate(model, SRC)
    b = SequenceGenerator(cfg).generate(model, SRC)
    c = SequenceGenerator(cfg, seed=124).generate(model, SRC)
    assert _tokens(a) == _tokens(b)
    assert _tokens(a) != _tokens(c)


def test_topk_one_is_greedy():
    model = FakeModel(vocab_size=24, seed=1)
    greedy = SequenceGenerator(beam_size=1, max_len_b=8).generate(model, SRC)
    for extra in (dict(sampling_topk=1), dict(sampling_topp=1e-6)):
        sampled = SequenceGenerator(beam_size=1, max_len_b=8, sampling=True, seed=0, **extra).generate(model, SRC)
        assert _tokens(sampled) == _tokens(greedy)
        for g, s in zip(greedy, sampled):
            assert s[0].score == pytest.approx(g[0].score, abs=1e-5)


@pytest.mark.parametrize("extra", [dict(sampling_topk=3), dict(sampling_topp=0.6), dict(temperature=0.8)])
def test_samples_stay_in_the_allowed_set_and_scores_are_model_logprobs(extra):
    model = FakeModel(vocab_size=24, seed=2)
    cfg = GenerationConfig(beam_size=4, max_len_b=6, min_len=2, sampling=True, seed=7, normalize_scores=False, **extra)
    hyps = SequenceGenerator(cfg).generate(model, SRC)
    temp = extra.get("temperature", 1.0)
    for sent, hs in zip(model.encode(SRC).sent.tolist(), hyps):
        assert len(hs) == 4
        for h in hs:
            prefix = [0]
            for step, (tok, ps) in enumerate(zip(h.tokens.tolist(), h.positional_scores.tolist())):
                lp = _step_lprobs(model, sent, prefix, step, min_len=2, temperature=temp)
                if step < 6:
                    order = lp.argsort(descending=True).tolist()
                    if "sampling_topk" in extra:
                        assert tok in order[:3]
                    if "sampling_topp" in extra:
                        probs = lp.exp()[order]
                        need = int((probs.cumsum(0) < 0.6).sum()) + 1
                        assert tok in order[:need]
                assert ps == pytest.approx(lp[tok].item(), abs=1e-5)
                prefix.append(tok)
            assert h.score == pytest.approx(h.positional_scores.sum().item(), abs=1e-5)


def test_first_token_frequencies_follow_the_model():
    model = FakeModel(vocab_size=12, seed=3, scale=1.0)
    src = SRC[:1].repeat(100, 1)
    cfg = GenerationConfig(beam_size=10, max_len_b=1, sampling=True, seed=0)
    hyps = SequenceGenerator(cfg).generate(model, src)
    counts = torch.zeros(12)
    for hs in hyps:
        for h in hs:
            counts[h.tokens[0]] += 1
    assert counts.sum() == 1000
    sent = model.encode(src[:1]).sent.item()
    p = _step_lprobs(model, sent, [0], 0).exp()
    p = p / p.sum()  # multinomial renormalises after pad and eos are removed
    assert (counts / 1000 - p).abs().sum().item() < 0.08
