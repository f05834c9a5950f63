"""The criterion against a token-by-token computation of the original's formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from openofa.errors import OFAError
from openofa.train.loss import LabelSmoothedCrossEntropy, label_smoothed_nll_loss

PAD, EOS = 1, 2


def reference(logits, target, eps, *, allowed=None, conf=None, prefix=0, ignore_eos=False):
    """Plain loops: for each kept token, (1-eps-eps_i)*nll + eps_i*sum over allowed of -logp."""
    loss = nll = 0.0
    count = 0
    B, T, V = logits.shape
    for b in range(B):
        for t in range(prefix, T):
            y = int(target[b, t])
            if y == PAD or (ignore_eos and y == EOS):
                continue
            row = logits[b, t].double().clone()
            ok = list(range(V)) if allowed is None else [v for v in range(V) if allowed[b, t, v]]
            mask = torch.full((V,), float("-inf"), dtype=torch.float64)
            mask[ok] = 0.0
            lp = torch.log_softmax(row + mask, -1)
            c = 1.0 if conf is None else float(conf[b])
            lp = lp * c
            eps_i = eps / (len(ok) - 1 + (1e-6 if allowed is not None else 0.0))
            tok_nll = -float(lp[y])
            smooth = -sum(float(lp[v]) for v in ok)
            loss += (1 - eps - eps_i) * tok_nll + eps_i * smooth
            nll += tok_nll
            count += 1
    return loss, nll, count


def batch(B=3, T=5, V=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 3
    target = torch.randint(3, V, (B, T), generator=g)
    target[0, 3:] = PAD
    target[1, 4] = EOS
    target[2, 2] = EOS
    target[2, 3:] = PAD
    return logits, target


def run(logits, target, **kw):
    extra = {k: kw.pop(k) for k in ("conf", "constraint_masks") if k in kw}
    crit = LabelSmoothedCrossEntropy(kw.pop("eps", 0.1), pad=PAD, eos=EOS, **kw)
    out = crit(logits, {"target": target, "ntokens": int(target.ne(PAD).sum()), "nsentences": len(target), **extra})
    return out


def test_matches_the_formula_and_skips_pads():
    logits, target = batch()
    out = run(logits, target)
    loss, nll, n = reference(logits, target, 0.1)
    assert out.sample_size == n == int(target.ne(PAD).sum())
    assert float(out.loss) == pytest.approx(loss, rel=1e-5)
    assert float(out.nll_loss) == pytest.approx(nll, rel=1e-5)
    assert out.nsentences == 3


def test_no_smoothing_is_summed_cross_entropy():
    logits, target = batch(seed=1)
    out = run(logits, target, eps=0.0)
    ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), target.view(-1), ignore_index=PAD, reduction="sum")
    assert float(out.loss) == pytest.approx(float(ce), rel=1e-5)
    assert float(out.nll_loss) == pytest.approx(float(ce), rel=1e-5)


def test_ignore_prefix_and_eos():
    logits, target = batch(seed=2)
    out = run(logits, target, ignore_prefix_size=2)
    loss, _, n = reference(logits, target, 0.1, prefix=2)
    assert out.sample_size == n and float(out.loss) == pytest.approx(loss, rel=1e-5)
    out = run(logits, target, ignore_eos=True)
    loss, _, n = reference(logits, target, 0.1, ignore_eos=True)
    assert out.sample_size == n and float(out.loss) == pytest.approx(loss, rel=1e-5)


def test_vqa_confidence_weights_the_log_probs():
    logits, target = batch(seed=3)
    conf = torch.tensor([1.0, 0.3, 0.6])
    out = run(logits, target, conf=conf)
    loss, nll, _ = reference(logits, target, 0.1, conf=conf)
    assert float(out.loss) == pytest.approx(loss, rel=1e-5)
    assert float(out.nll_loss) == pytest.approx(nll, rel=1e-5)


def test_constraint_masks_restrict_softmax_and_smoothing():
    logits, target = batch(seed=4)
    g = torch.Generator().manual_seed(5)
    allowed = torch.rand(*logits.shape, generator=g) < 0.5
    allowed.scatter_(-1, target[..., None], True)  # the target is always allowed
    out = run(logits, target, constraint_masks=allowed)
    loss, nll, _ = reference(logits, target, 0.1, allowed=allowed)
    assert float(out.loss) == pytest.approx(loss, rel=1e-5)
    assert float(out.nll_loss) == pytest.approx(nll, rel=1e-5)


def test_constraint_range():
    logits, target = batch(V=20, seed=6)
    target = target.clamp(max=15)
    target[target.ge(4) & target.lt(8)] = 9
    out = run(logits, target, constraint_range="8,16")
    allowed = torch.zeros(*logits.shape, dtype=torch.bool)
    allowed[..., :4] = True
    allowed[..., 8:16] = True
    loss, _, _ = reference(logits, target, 0.1, allowed=allowed)
    assert float(out.loss) == pytest.approx(loss, rel=1e-5)


def test_drop_worst_keeps_the_lowest_token_losses_after_the_start_update():
    lprobs = torch.log_softmax(torch.randn(10, 7, generator=torch.Generator().manual_seed(7)), -1)
    target = torch.arange(10) % 7
    full, _, n = label_smoothed_nll_loss(lprobs, target, 0.1)
    kept, _, k = label_smoothed_nll_loss(lprobs, target, 0.1, drop_worst_ratio=0.2)
    assert (n, k) == (10, 8) and float(kept) < float(full)
    per_token = [float(label_smoothed_nll_loss(lprobs[i:i + 1], target[i:i + 1], 0.1)[0]) for i in range(10)]
    assert float(kept) == pytest.approx(sum(sorted(per_token)[:8]), rel=1e-6)
    logits, tgt = batch(seed=8)
    before = run(logits, tgt, drop_worst_ratio=0.2, drop_worst_after=5)
    assert before.sample_size == int(tgt.ne(PAD).sum())  # update 0: nothing dropped yet
    crit = LabelSmoothedCrossEntropy(0.1, drop_worst_ratio=0.2, drop_worst_after=5)
    after = crit(logits, {"target": tgt}, update_num=6)
    assert after.sample_size == int(before.sample_size * 0.8)


def test_gradients_flow_and_bad_settings_are_errors():
    logits, target = batch(seed=9)
    logits.requires_grad_(True)
    run(logits, target).loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert not logits.grad[0, 3:].any()  # padded positions get no gradient
    with pytest.raises(OFAError, match="label_smoothing"):
        LabelSmoothedCrossEntropy(1.0)
    with pytest.raises(OFAError, match="constraint_range"):
        LabelSmoothedCrossEntropy(0.1, constraint_range="x")
    assert math.isfinite(float(run(*batch(seed=10), eps=0.1).loss))


def test_candidate_list_masks_from_the_data_layer_by_hand():
    """The masks of the answer list "red", "red car", "blue" for the target "red car": the loss
    normalises over {red, blue}, then {car, eos}, then {eos} alone, and differs from the
    unconstrained loss."""
    from openofa.data.answers import CandidateAnswers
    from openofa.text import OFATokenizer

    tok = OFATokenizer.from_language("en")
    red, car, blue = tok.encode(" red")[0], tok.encode(" car")[0], tok.encode(" blue")[0]
    cands = CandidateAnswers(["red", "red car", "blue"], tok)
    target = torch.tensor([[PAD, red, car, EOS]])
    masks = cands.target_mask(target[0])[None]
    logits = torch.randn(1, 4, len(tok), generator=torch.Generator().manual_seed(11))
    eps = 0.1
    expected = 0.0
    for pos, y, allowed in ((1, red, (red, blue)), (2, car, (car, EOS)), (3, EOS, (EOS,))):
        x = {v: float(logits[0, pos, v]) for v in allowed}
        log_z = math.log(sum(math.exp(val) for val in x.values()))
        lp = {v: val - log_z for v, val in x.items()}
        eps_i = eps / (len(allowed) - 1 + 1e-6)
        expected += (1 - eps - eps_i) * -lp[y] + eps_i * sum(-val for val in lp.values())
    out = run(logits, target, eps=eps, constraint_masks=masks)
    plain = run(logits, target, eps=eps)
    assert out.sample_size == plain.sample_size == 3
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    assert float(plain.loss) > float(out.loss) + 1.0  # a softmax over 59k tokens costs far more
    with pytest.raises(OFAError, match="constraint_masks of shape"):
        run(logits[..., :100], target, constraint_masks=masks)
