"""Numerical parity of the model with the original implementation (golden forward fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support import GOLDEN, recipe_model

TOL = {"tiny": 1e-4, "base": 2e-4}


@pytest.fixture(scope="module", params=["tiny", "base"])
def case(request):
    size = request.param
    z = np.load(GOLDEN / f"forward_ofa_{size}.npz")
    ref = {k: torch.from_numpy(z[k]) for k in z.files}
    return size, recipe_model(size), ref


def _close(actual, expected, atol, mask=None):
    if mask is not None:
        actual, expected = actual[mask], expected[mask]
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= atol + 1e-4 * expected.abs().max().item(), f"max abs diff {diff}"


@torch.no_grad()
def test_resnet_features(case):
    size, model, ref = case
    feat = model.encoder.embed_images(ref["patch_images"])
    scale = ref["resnet_features"].abs().max().item()
    assert feat.shape == ref["resnet_features"].shape
    assert (feat - ref["resnet_features"]).abs().max().item() <= 1e-4 * scale


@torch.no_grad()
def test_folded_batchnorm_keeps_parity(case):
    """The inference-time trunk (BatchNorms folded into the convolutions, what ``openofa.load``
    runs) meets the same tolerances as the unfolded one."""
    import copy

    size, model, ref = case
    folded = copy.deepcopy(model).fold_batchnorm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    feat = folded.encoder.embed_images(ref["patch_images"])
    assert (feat - ref["resnet_features"]).abs().max().item() <= 1e-4 * ref["resnet_features"].abs().max().item()
    enc = folded.encode(ref["src_tokens"], ref["src_lengths"], ref["patch_images"], ref["patch_masks"])
    _close(enc.hidden, ref["encoder_out"].transpose(0, 1), TOL[size])


@torch.no_grad()
def test_encoder_states(case):
    size, model, ref = case
    enc = model.encode(ref["src_tokens"], ref["src_lengths"], ref["patch_images"], ref["patch_masks"])
    assert torch.equal(enc.padding_mask, ref["encoder_padding_mask"])
    _close(enc.hidden, ref["encoder_out"].transpose(0, 1), TOL[size])
    _close(enc.pos_embed, ref["encoder_position_embeddings"], TOL[size])


@torch.no_grad()
def test_teacher_forced_and_cached_logits(case):
    size, model, ref = case
    prev = ref["prev_output_tokens"]
    valid = prev.ne(model.config.pad)  # pad positions are garbage in the reference by construction
    logits = model(ref["src_tokens"], ref["src_lengths"], ref["patch_images"], ref["patch_masks"], prev)
    assert logits.shape == ref["decoder_logits"].shape
    _close(logits, ref["decoder_logits"], TOL[size], valid)
    # log-softmax at fixed ids: checks the full-vocabulary normalisation too
    lp = logits.log_softmax(-1)[:, :, ref["fixed_vocab_indices"]]
    _close(lp, ref["decoder_log_softmax_at_fixed_indices"], TOL[size], valid)

    enc = model.encode(ref["src_tokens"], ref["src_lengths"], ref["patch_images"], ref["patch_masks"])
    cache = model.init_cache(enc)
    steps = [model.decode_step(prev[:, : t + 1], cache) for t in range(prev.shape[1])]
    _close(torch.stack(steps, 1), ref["incremental_logits"], TOL[size], valid)


@torch.no_grad()
def test_text_only(case):
    size, model, ref = case
    enc = model.encode(ref["src_tokens"], ref["src_lengths"])
    assert torch.equal(enc.padding_mask, ref["text_only_encoder_padding_mask"])
    _close(enc.hidden, ref["text_only_encoder_out"].transpose(0, 1), TOL[size])
    valid = ref["prev_output_tokens"].ne(model.config.pad)
    _close(model.decode(ref["prev_output_tokens"], enc), ref["text_only_decoder_logits"], TOL[size], valid)


@torch.no_grad()
def test_beam_grouped_cache_matches_per_row_cache(tiny_model):
    """Decoding k beams that share one encoder row equals decoding k separate copies of it."""
    z = np.load(GOLDEN / "forward_ofa_tiny.npz")
    src, img = torch.from_numpy(z["src_tokens"]), torch.from_numpy(z["patch_images"])
    enc = tiny_model.encode(src, None, img, torch.tensor([True, True]))
    k = 3
    grouped = tiny_model.init_cache(enc, beam_size=k)
    flat = tiny_model.init_cache(enc.repeat_interleave(k), beam_size=1)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.zeros(2 * k, 1, dtype=torch.long)
    for _ in range(4):
        a = tiny_model.decode_step(tokens, grouped)
        b = tiny_model.decode_step(tokens, flat)
        assert (a - b).abs().max().item() < 1e-4
        order = torch.cat([torch.randperm(k, generator=gen) + i * k for i in range(2)])  # reorder within groups
        grouped.reorder(order)
        flat.reorder(order)
        tokens = torch.cat([tokens[order], torch.randint(4, 500, (2 * k, 1), generator=gen)], 1)
    # drop the first input: both caches shrink to the second input's rows
    keep = torch.arange(k, 2 * k)
    grouped.reorder(keep)
    flat.reorder(keep)
    tokens = tokens[keep]
    assert (tiny_model.decode_step(tokens, grouped) - tiny_model.decode_step(tokens, flat)).abs().max() < 1e-4


def test_expanded_cache_continues_a_shared_prefix_like_teacher_forcing(tiny_model):
    """A prefix decoded once, the cache expanded to n rows, then n different continuations: the
    features equal teacher forcing of the whole sequences, and project onto a vocabulary subset."""
    z = np.load(GOLDEN / "forward_ofa_tiny.npz")
    src, img = torch.from_numpy(z["src_tokens"][:1]), torch.from_numpy(z["patch_images"][:1])
    with torch.inference_mode():
        enc = tiny_model.encode(src, None, img, torch.tensor([True]))
        prefix = torch.tensor([[0, 300, 301, 302]])
        cont = torch.tensor([[40, 41, 42], [50, 51, 52], [60, 40, 7]])
        cache = tiny_model.init_cache(enc, beam_size=1)
        for t in range(prefix.shape[1]):
            last = tiny_model.decode_step(prefix[:, : t + 1], cache, features_only=True)
        cache.expand(3)
        full = torch.cat([prefix.expand(3, -1), cont], 1)
        feats = [last.expand(3, -1)] + [tiny_model.decode_step(full[:, : prefix.shape[1] + j + 1], cache,
                                                               features_only=True) for j in range(3)]
        logits = tiny_model.output_logits(torch.stack(feats, 1))
        want = tiny_model.decode(full, enc.repeat_interleave(3))[:, prefix.shape[1] - 1:]
        assert (logits - want).abs().max().item() < 1e-4
        vocab = torch.tensor([2, 40, 52, 700])
        torch.testing.assert_close(tiny_model.output_logits(feats[1], vocab), logits[:, 1, vocab],
                                   atol=1e-5, rtol=0)  # the same dot products, summed in another order
    with pytest.raises(ValueError, match="one row per input"):
        cache.expand(2)


@torch.no_grad()
def test_cached_steps_across_bias_chunks_and_a_shrinking_batch(tiny_model):
    """The cache computes position biases a chunk of steps at a time: 40 steps (three chunks) with
    the first input leaving the batch mid-chunk still equal the teacher-forced logits."""
    z = np.load(GOLDEN / "forward_ofa_tiny.npz")
    src, img = torch.from_numpy(z["src_tokens"]), torch.from_numpy(z["patch_images"])
    enc = tiny_model.encode(src, None, img, torch.tensor([True, True]))
    chunk = tiny_model.decoder.BIAS_CHUNK
    steps = 2 * chunk + 8
    prev = torch.cat([torch.zeros(2, 1, dtype=torch.long),
                      torch.randint(4, 500, (2, steps - 1), generator=torch.Generator().manual_seed(1))], 1)
    want = tiny_model.decode(prev, enc)  # (2, steps, V)
    cache = tiny_model.init_cache(enc)
    leave = chunk + 4
    for t in range(steps):
        rows = prev if t < leave else prev[1:]
        got = tiny_model.decode_step(rows[:, : t + 1], cache)
        ref = want[:, t] if t < leave else want[1:, t]
        assert (got - ref).abs().max().item() < 1e-4, t
        if t == leave - 1:
            cache.reorder(torch.tensor([1]))
