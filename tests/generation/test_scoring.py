import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from openofa.generation import Trie, score_candidates
from ofa_gen_fakes import FakeModel

SRC = torch.tensor([[0, 5, 6, 7, 2], [0, 9, 4, 2, 1]])
CANDS = [[5], [6, 7], [8, 9, 10], [4]]


def _manual(model, sent, cand, prompt=(), eos=True):
    prefix = [0] + list(prompt)
    target = list(cand) + ([2] if eos else [])
    total = 0.0
    for tok in target:
        total += F.log_softmax(model.logits_for(sent, prefix), -1)[tok].item()
        prefix.append(tok)
    return total


def test_shared_list_matches_manual_sum_and_mean():
    model = FakeModel(vocab_size=16, seed=0)
    sents = model.encode(SRC).sent.tolist()
    model.encode_calls = 0
    s = score_candidates(model, SRC, CANDS)
    assert model.encode_calls == 1
    assert s.shape == (2, 4)
    want = torch.tensor([[_manual(model, sh, c) for c in CANDS] for sh in sents])
    torch.testing.assert_close(s, want, atol=1e-5, rtol=0)
    mean = score_candidates(model, SRC, CANDS, reduction="mean")
    lens = torch.tensor([len(c) + 1 for c in CANDS], dtype=torch.float32)
    torch.testing.assert_close(mean, want / lens, atol=1e-5, rtol=0)
    torch.testing.assert_close(score_candidates(model, SRC, CANDS, chunk_size=3), s)
    torch.testing.assert_close(score_candidates(model, SRC, [torch.tensor(c) for c in CANDS]), s)


def test_per_input_lists_prompts_and_no_eos():
    model = FakeModel(vocab_size=16, seed=1)
    sents = model.encode(SRC).sent.tolist()
    per = [[[5], [6, 7]], [[8, 9, 10], [4], [11]]]
    prompts = [[12, 13], []]
    out = score_candidates(model, SRC, per, prompts=prompts)
    assert [o.shape[0] for o in out] == [2, 3]
    for sh, group, prompt, o in zip(sents, per, prompts, out):
        want = torch.tensor([_manual(model, sh, c, prompt) for c in group])
        torch.testing.assert_close(o, want, atol=1e-5, rtol=0)
    no_eos = score_candidates(model, SRC, per, append_eos=False)
    for sh, group, o in zip(sents, per, no_eos):
        want = torch.tensor([_manual(model, sh, c, eos=False) for c in group])
        torch.testing.assert_close(o, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        score_candidates(model, SRC, per[:1])
    assert score_candidates(model, SRC, []).shape == (2, 0)


def test_trie_renormalises_over_allowed_tokens():
    model = FakeModel(vocab_size=16, seed=2)
    trie = Trie.from_answers(CANDS)
    sent = model.encode(SRC[:1]).sent.item()
    s = score_candidates(model, SRC[:1], CANDS, constraints=trie)[0]
    for cand, got in zip(CANDS, s.tolist()):
        prefix, total = [0], 0.0
        for tok in cand + [2]:
            allowed = trie.next_tokens(prefix)
            logits = model.logits_for(sent, prefix)
            lp = F.log_softmax(logits[allowed], -1)
            total += lp[allowed.index(tok)].item()
            prefix.append(tok)
        assert got == pytest.approx(total, abs=1e-5)
    # a candidate outside the trie gets -inf
    assert score_candidates(model, SRC[:1], [[13]], constraints=trie)[0, 0] == float("-inf")


def _golden_inputs(golden, name):
    data = json.loads((golden / f"generate_{name}.json").read_text())
    pre = np.load(golden / "preprocess.npz")
    images = torch.stack([torch.from_numpy(pre[f"caption{data['image_size']}/{i}"]) for i in data["images"]])
    width = max(len(r) for r in data["src_tokens"])
    src = torch.tensor([r + [1] * (width - len(r)) for r in data["src_tokens"]])
    return data, src, images, torch.tensor(data["patch_masks"])


def test_golden_vqa_answer_scores(golden, tiny_model):
    # teacher-forced trie scores equal the unnormalized beam-search scores of the original
    data, src, images, masks = _golden_inputs(golden, "vqa_trie_beam5")
    trie = Trie.from_answers(data["answer_ids"])
    s = score_candidates(tiny_model, src, data["answer_ids"], patch_images=images, patch_masks=masks,
                         constraints=trie)
    for b, hyps in enumerate(data["hypos"]):
        for h in hyps:
            k = data["answer_ids"].index(h["tokens"][:-1])
            assert s[b, k].item() == pytest.approx(h["score"], abs=1e-4)
    # beam 5 dropped exactly the answer the all-candidate scores rank last
    assert s.argmin(1).tolist() == [data["answer_ids"].index([80])] * 2


def test_golden_caption_mean_scores(golden, tiny_model):
    data, src, images, masks = _golden_inputs(golden, "caption_beam5")
    per = [[h["tokens"][:-1] for h in hyps] for hyps in data["hypos"]]
    out = score_candidates(tiny_model, src, per, patch_images=images, patch_masks=masks, reduction="mean")
    for o, hyps in zip(out, data["hypos"]):
        torch.testing.assert_close(o, torch.tensor([h["score"] for h in hyps]), atol=1e-4, rtol=0)


class _PlainDecode:
    """Our model seen through the minimal scoring interface (encode/decode/config): the path that
    decodes every candidate row on its own copy of the encoder output over the whole vocabulary."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def encode(self, *a, **k):
        return self.model.encode(*a, **k)

    def decode(self, prev, enc):
        return self.model.decode(prev, enc)


@pytest.mark.parametrize("with_trie", [True, False])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_shared_encoder_path_matches_decoding_every_row(golden, tiny_model, with_trie, reduction):
    """The grouped path (one encoder pass shared by an input's candidates, only scored positions
    projected, onto the trie's tokens only) against the plain one: prompts, per-input lists of
    different sizes, chunks that split an input, a candidate outside the trie."""
    data, src, images, masks = _golden_inputs(golden, "vqa_trie_beam5")
    answers = data["answer_ids"]
    trie = Trie.from_answers(answers) if with_trie else None
    per = [answers + [[80, 80]], answers[:2]]  # [80, 80] is not in the trie
    prompts = [[50, 51, 52], [60]]
    kw = dict(patch_images=images, patch_masks=masks, prompts=prompts, constraints=trie,
              reduction=reduction, chunk_size=3)
    fast = score_candidates(tiny_model, src, per, **kw)
    plain = score_candidates(_PlainDecode(tiny_model), src, per, **kw)
    for f, p in zip(fast, plain):
        assert torch.equal(f.isinf(), p.isinf())
        torch.testing.assert_close(f[~f.isinf()], p[~p.isinf()], atol=2e-5, rtol=0)
    assert fast[0][-1] == float("-inf") if with_trie else fast[0][-1] > float("-inf")


def test_a_small_bias_budget_scores_one_candidate_at_a_time(golden, tiny_model, monkeypatch):
    from openofa.generation import scoring

    data, src, images, masks = _golden_inputs(golden, "vqa_trie_beam5")
    trie = Trie.from_answers(data["answer_ids"])
    kw = dict(patch_images=images, patch_masks=masks, constraints=trie)
    want = score_candidates(tiny_model, src, data["answer_ids"], **kw)
    sizes = []
    real = scoring._score_group
    def counted(model, enc, part, *a):
        sizes.append(len(part))
        return real(model, enc, part, *a)

    monkeypatch.setattr(scoring, "_score_group", counted)
    monkeypatch.setattr(scoring, "GROUP_BIAS_ELEMENTS", 1)
    got = score_candidates(tiny_model, src, data["answer_ids"], **kw)
    assert set(sizes) == {1} and len(sizes) == 2 * len(data["answer_ids"])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
