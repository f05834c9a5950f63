"""MuE early exit (openofa.model.early_exit): the criterion, the decoder's threshold schedule, the
KV cache of skipped layers, and generation with the option off, never triggering and aggressive."""

from __future__ import annotations

import math

import pytest
import torch

from openofa.errors import OFAError
from openofa.model.early_exit import ExitRule, check_threshold, cosine, decoder_threshold, parse, set_early_exit


# ---- the criterion by hand -------------------------------------------------------------------------
def test_cosine_is_over_the_whole_batch_flattened():
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])  # (2, 1, 2): two rows
    b = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])
    # flattened: a = (1, 0, 0, 2), b = (1, 1, 0, 1): a.b = 3, |a| = sqrt 5, |b| = sqrt 3
    assert cosine(a, b) == pytest.approx(3 / math.sqrt(15), abs=1e-7)
    # not the mean of the rows' own similarities (1/sqrt 2 and 1)
    assert cosine(a, b) != pytest.approx((1 / math.sqrt(2) + 1) / 2, abs=1e-3)
    assert cosine(torch.zeros(3), torch.ones(3)) == 0.0


def test_exit_when_similarity_is_above_the_threshold():
    inp = torch.tensor([1.0, 0.0])
    out = torch.tensor([3.0, 4.0])  # cosine 0.6
    assert ExitRule(0.55).exit_after(out, inp)
    assert not ExitRule(0.65).exit_after(out, inp)
    assert not ExitRule(1.0).exit_after(inp, inp)  # 1 never exits, even for an unchanged input


def test_decoder_schedule_by_hand():
    # max_len 8: nine steps, no exit for steps 0, 1, 2 (< 9 / 3), then 0.9 T + 0.1 exp(-(step + 1) / 9)
    assert [decoder_threshold(0.5, s, 8) for s in range(3)] == [1.0, 1.0, 1.0]
    assert decoder_threshold(0.5, 3, 8) == pytest.approx(0.45 + 0.1 * math.exp(-4 / 9))
    assert decoder_threshold(0.5, 8, 8) == pytest.approx(0.45 + 0.1 * math.exp(-1))
    rule = ExitRule(0.5, decoder=True)
    inp, out = torch.tensor([1.0, 0.0]), torch.tensor([4.0, 3.0])  # cosine 0.8
    assert not rule.exit_after(out, inp, step=2, max_len=8)
    assert rule.exit_after(out, inp, step=3, max_len=8)
    # without a maximum length (decode_step outside the generator) the threshold is T itself
    assert rule.exit_after(out, inp, step=0)


@pytest.mark.parametrize("value", [0, -0.5, 1.5, float("nan"), "x", "0.5,0.4,0.3", (0.5,)])
def test_bad_thresholds_are_one_line_errors(value):
    with pytest.raises(OFAError) as e:
        parse(value)
    assert "\n" not in str(e.value)


def test_threshold_forms():
    assert parse(None) == (None, None)
    assert parse(0.9) == (0.9, 0.9)
    assert parse("0.9") == (0.9, 0.9)
    assert parse("0.8,0.95") == (0.8, 0.95)
    assert parse("none,0.95") == (None, 0.95)
    assert parse((0.7, None)) == (0.7, None)
    assert check_threshold(1) == 1.0


# ---- the model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def own():
    import openofa

    return openofa.load()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    import json

    from openofa.mini.scenes import write_dataset

    files = write_dataset(tmp_path_factory.mktemp("scenes"), n=6, seed=0)
    root = files["caption"].parent
    rows = [json.loads(line) for line in files["caption"].read_text().splitlines()][:6]
    return [str(root / r["image"]) for r in rows]


def _caption_hypos(ofa, images, beam=5):
    from openofa.tasks import get_task

    task = get_task("caption")
    examples = [task.prepare(ofa, image=img) for img in images]
    return ofa.generate(examples, task.generation, task="caption", every=True, beam_size=beam)


def _same(a, b):
    assert len(a) == len(b)
    for ha, hb in zip(a, b):
        assert len(ha) == len(hb)
        for x, y in zip(ha, hb):
            assert torch.equal(x.tokens, y.tokens)
            assert x.score == y.score
            assert torch.equal(x.positional_scores, y.positional_scores)


class _LayerCounter:
    def __init__(self, layers):
        self.calls = [0] * len(layers)
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _hook(self, i):
        def hook(module, args, output):
            self.calls[i] += 1
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def test_off_and_never_triggering_give_identical_outputs(own, scenes):
    set_early_exit(own.model, None)
    base = _caption_hypos(own, scenes)
    assert own.model.encoder.exit_rule is None and own.model.decoder.exit_rule is None
    try:
        # 1 never exits; 0.999 is above every similarity this model's layers reach
        for t in (1.0, 0.999):
            enc_rule, dec_rule = set_early_exit(own.model, t)
            _same(base, _caption_hypos(own, scenes))
            assert enc_rule.runs == 1 and enc_rule.mean_layers == len(own.model.encoder.layers)
            assert dec_rule.runs > 5 and dec_rule.mean_layers == len(own.model.decoder.layers)
    finally:
        set_early_exit(own.model, None)
    _same(base, _caption_hypos(own, scenes))  # turned off again: as before


def test_load_without_the_option_is_as_before(own, scenes):
    import openofa

    other = openofa.load(early_exit=None)
    assert other.model.encoder.exit_rule is None and other.model.decoder.exit_rule is None
    _same(_caption_hypos(own, scenes[:2]), _caption_hypos(other, scenes[:2]))


def test_aggressive_threshold_runs_fewer_layers_and_still_generates(own, scenes):
    model = own.model
    n_enc, n_dec = len(model.encoder.layers), len(model.decoder.layers)
    enc_count, dec_count = _LayerCounter(model.encoder.layers), _LayerCounter(model.decoder.layers)
    try:
        set_early_exit(model, None)
        _caption_hypos(own, scenes)
        full_enc, full_dec = list(enc_count.calls), list(dec_count.calls)
        enc_count.calls, dec_count.calls = [0] * n_enc, [0] * n_dec
        enc_rule, dec_rule = set_early_exit(model, 0.05)  # any layer that keeps its input's direction
        hypos = _caption_hypos(own, scenes)
    finally:
        enc_count.close()
        dec_count.close()
        set_early_exit(model, None)
    assert full_enc == [1] * n_enc and enc_count.calls == [1] + [0] * (n_enc - 1)
    assert len(set(full_dec)) == 1
    steps = dec_count.calls[0]
    # the first third of the steps run every layer (the schedule), the rest stop after layer 1
    assert 0 < dec_count.calls[1] < steps and dec_count.calls[1:] == [dec_count.calls[1]] * (n_dec - 1)
    assert sum(dec_count.calls) < sum(full_dec) * steps / full_dec[0]
    assert dec_rule.layers == sum(dec_count.calls) and enc_rule.layers == 1
    tok = own.tokenizer
    for per_input in hypos:
        best = per_input[0]
        assert best.tokens[-1].item() == tok.eos and len(best.tokens) >= 2
        assert bool(torch.isfinite(best.positional_scores).all())
        assert 0 <= int(best.tokens.min()) and int(best.tokens.max()) < model.config.vocab_size
        assert own.decode_text(best.tokens).strip()


def test_skipped_layers_get_keys_and_values_from_the_exit_output(own, scenes):
    """Decoding step by step with exits after layer 1: every layer's cache keeps one entry per
    position, and a skipped layer's entry is its projection of the exit layer's output."""
    from openofa.tasks import get_task

    model = own.model
    task = get_task("caption")
    batch = own._collate([task.prepare(own, image=scenes[0])])
    enc = model.encode(batch["src_tokens"], patch_images=batch["patch_images"])
    cache = model.init_cache(enc)
    seen = {}
    first = model.decoder.layers[0]
    handle = first.register_forward_hook(lambda m, a, o: seen.__setitem__("x", o))
    try:
        set_early_exit(model, (None, 0.05))
        tokens = torch.tensor([[own.tokenizer.bos]])
        with torch.no_grad():
            for t in range(4):
                logits = model.decode_step(tokens, cache)
                assert [kv.length for kv in cache.self_kv] == [t + 1] * len(cache.self_kv)
                for layer, kv in zip(model.decoder.layers[1:], cache.self_kv[1:]):
                    k, v = layer.self_attn.project_kv(layer.self_attn_layer_norm(seen["x"]))
                    assert torch.equal(kv.k[:, :, t:t + 1], k) and torch.equal(kv.v[:, :, t:t + 1], v)
                expected = model.decoder.output_projection(model.decoder.layer_norm(seen["x"]))[:, -1]
                assert torch.equal(logits, expected)  # the exit output goes through the final norm
                tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    finally:
        handle.remove()
        set_early_exit(model, None)
    assert model.decoder.exit_rule is None


def test_bad_threshold_is_refused_before_loading():
    import openofa

    with pytest.raises(OFAError, match=r"must be a number in \(0, 1\]"):
        openofa.load(early_exit=1.5)


def test_cli_flag(capsys, scenes):
    from openofa.cli import main

    code = main(["caption", scenes[0], "--early-exit", "0.9", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip()
    code = main(["caption", scenes[0], "--early-exit", "2", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("error: ") and "(0, 1]" in err and "Traceback" not in err
