"""The original's --disable-entangle (every released checkpoint): the decoder's input is the token
embedding alone, its absolute position embedding enters only through the attention biases."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from openofa.config import get_config
from openofa.model import build_model


def _pair():
    cfg = get_config("mini")
    torch.manual_seed(0)
    entangled = build_model(cfg).eval()
    disabled = build_model(dataclasses.replace(cfg, disable_entangle=True)).eval()
    disabled.load_state_dict(entangled.state_dict())
    src = torch.tensor([[0, 5, 9, 12, 2], [0, 7, 2, 1, 1]])
    images = torch.randn(2, 3, 64, 64)
    prev = torch.tensor([[0, 8, 11, 6], [0, 9, 9, 1]])
    return entangled, disabled, src, images, prev


def test_decoder_input_is_the_token_embedding_alone():
    _, m, _, _, prev = _pair()
    dec = m.decoder
    with torch.no_grad():
        got = dec._embed(prev, torch.arange(prev.shape[1]))
        want = dec.layernorm_embedding(dec.embed_tokens(prev))
    torch.testing.assert_close(got, want)


def test_flag_changes_the_decoder_not_the_encoder():
    entangled, disabled, src, images, prev = _pair()
    with torch.no_grad():
        ea, eb = entangled.encode(src, patch_images=images), disabled.encode(src, patch_images=images)
        torch.testing.assert_close(ea.hidden, eb.hidden, rtol=0, atol=0)
        a, b = entangled.decode(prev, ea), disabled.decode(prev, eb)
        assert (a - b).abs().max() > 1e-2
        # with zero decoder position embeddings (biases and input alike) the two agree
        for m in (entangled, disabled):
            m.decoder.embed_positions.weight.zero_()
        torch.testing.assert_close(entangled.decode(prev, ea), disabled.decode(prev, eb))


@pytest.mark.parametrize("code", [False, True])
def test_cached_steps_equal_teacher_forcing(code):
    """Incremental decoding (text rows and image-code rows) follows the flag as teacher forcing does."""
    _, m, src, images, prev = _pair()
    prev = prev[:1]
    masks = torch.tensor([code])
    with torch.no_grad():
        enc = m.encode(src[:1], patch_images=images[:1])
        want = m.decode(prev, enc, code_masks=masks if code else None)
        cache = m.init_cache(enc, 1, code_masks=masks if code else None)
        steps = [m.decode_step(prev[:, : t + 1], cache) for t in range(prev.shape[1])]
    torch.testing.assert_close(torch.stack(steps, 1), want, rtol=1e-4, atol=1e-4)
