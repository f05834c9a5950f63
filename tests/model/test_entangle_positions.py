"""The original's --entangle-position-embedding: position embeddings added to the encoder's
token and patch embeddings (before their layer norms), on top of the attention bias."""

from __future__ import annotations

import dataclasses

import torch

from openofa.config import get_config
from openofa.model import build_model
from openofa.model.positions import image_position_ids


def _pair():
    cfg = dataclasses.replace(get_config("mini"), entangle_position_embedding=False)
    torch.manual_seed(0)
    plain = build_model(cfg).eval()
    entangled = build_model(dataclasses.replace(cfg, entangle_position_embedding=True)).eval()
    entangled.load_state_dict(plain.state_dict())
    src = torch.tensor([[0, 5, 9, 12, 2], [0, 7, 2, 1, 1]])
    images = torch.randn(2, 3, 64, 64)
    return plain, entangled, src, images


def test_same_keys_and_shapes():
    plain, entangled, _, _ = _pair()
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
        {k: v.shape for k, v in entangled.state_dict().items()}


def test_entangled_patch_embedding_is_the_hand_computation():
    _, m, _, images = _pair()
    enc = m.encoder
    with torch.no_grad():
        feat = enc.embed_images(images)
        h, w = feat.shape[-2:]
        x = enc.image_proj(feat.flatten(2).transpose(1, 2)) + enc.type_embedding.weight[1]
        x = x + enc.embed_image_positions(image_position_ids(h, w, m.config.image_bucket_size))
        want = enc.patch_layernorm_embedding(x)
        got, gh, gw = enc.embed_image(images)
    assert (gh, gw) == (h, w)
    torch.testing.assert_close(got, want)


def test_positions_change_the_encoder_only_when_entangled():
    plain, entangled, src, images = _pair()
    with torch.no_grad():
        a = plain.encode(src, patch_images=images).hidden
        b = entangled.encode(src, patch_images=images).hidden
        assert not torch.allclose(a, b, atol=1e-3)
        # with zero position embeddings the two models agree exactly
        for m in (plain, entangled):
            m.encoder.embed_positions.weight.zero_()
            m.encoder.embed_image_positions.weight.zero_()
        a = plain.encode(src, patch_images=images).hidden
        b = entangled.encode(src, patch_images=images).hidden
    torch.testing.assert_close(a, b)
