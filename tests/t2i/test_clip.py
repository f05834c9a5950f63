"""CLIP ViT-B/16 (OpenAI layout, plain PyTorch) against the original's scores: recipe weights
rounded to float16 as the original's ``convert_weights`` does, its tokens, features and cosines
(fixture ``fixtures/t2i``), and its preprocessing and ti/ii similarity orderings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openofa import clip
from openofa.checkpoints.recipe import recipe_tensor, state_dict_digest
from openofa.errors import OFAError

FIX = Path(__file__).parent.parent / "fixtures" / "t2i"


@pytest.fixture(scope="module")
def meta():
    return json.loads((FIX / "clip.json").read_text())


@pytest.fixture(scope="module")
def fix():
    return np.load(FIX / "clip_scores.npz")


@pytest.fixture(scope="module")
def recipe_sd(meta):
    return {k: recipe_tensor(k, s) for k, s in meta["state_dict_recipe_file_keys"]}


@pytest.fixture(scope="module")
def model(recipe_sd):
    return clip.build_from_state_dict(recipe_sd)


@pytest.fixture(scope="module")
def images():
    decoded = np.load(FIX / "vqgan_decode.npz")["decoded_uint8"]
    return [Image.fromarray(decoded), Image.open(FIX / "a_200x150_rgb.png")]


def test_weights_layout_and_fp16_rounding(meta, recipe_sd, model):
    assert state_dict_digest(recipe_sd) == meta["recipe_digest_sha256_fp32_before_load"]
    assert sorted(clip.fp16_keys(recipe_sd)) == sorted(meta["keys_rounded_to_fp16_by_build_model_convert_weights"])
    got = model.state_dict()
    k = "visual.transformer.resblocks.0.attn.in_proj_weight"
    assert torch.equal(got[k], recipe_sd[k].half().float()) and not torch.equal(got[k], recipe_sd[k])
    assert torch.equal(got["token_embedding.weight"], recipe_sd["token_embedding.weight"])  # not rounded


def test_tokens_features_and_cosines_equal_the_original(meta, fix, model, images):
    tokens = clip.tokenizer()(meta["texts"])
    assert np.array_equal(tokens.numpy(), fix["text_tokens"])
    mean, std = torch.tensor(clip.MEAN).view(3, 1, 1), torch.tensor(clip.STD).view(3, 1, 1)
    want_pixels = (torch.from_numpy(fix["pixels_uint8"].astype(np.float32) / 255.0) - mean) / std
    pixels = clip.preprocess(images)
    assert torch.equal(pixels, want_pixels)
    np.testing.assert_allclose(model.encode_image(pixels).numpy(), fix["image_features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.encode_text(tokens).numpy(), fix["text_features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.similarity(pixels, tokens).numpy(), fix["cosine"], atol=1e-4, rtol=0)
    for text, want in meta["compute_text_similarity"].items():
        s = clip.scores(model, images, text)
        order = torch.argsort(s, descending=True).tolist()
        assert order == want["indices"]
        np.testing.assert_allclose(s[order].numpy(), want["sorted_scores"], atol=1e-4)
    ref = meta["compute_ref_image_similarity_ref_is_image_b"]
    s = clip.image_scores(model, images, images[1])
    assert torch.argsort(s, descending=True).tolist() == ref["indices"]
    np.testing.assert_allclose(s[ref["indices"]].numpy(), ref["sorted_scores"], atol=1e-4)


def test_tokenizer_edge_cases():
    tok = clip.tokenizer()
    assert tok.ids("A  Red\tBUS") == tok.ids("a red bus")
    long = tok(" ".join(["bus"] * 200))
    assert long.shape == (1, 77) and int(long[0, -1]) == clip.EOT and int(long[0, 0]) == clip.SOT
    assert tok("&amp;").tolist() == tok("&").tolist()


def test_load_files(tmp_path, recipe_sd, model):
    from safetensors.torch import save_file

    small = {k: v for k, v in recipe_sd.items()}
    save_file(small, str(tmp_path / "clip.safetensors"))
    got = clip.load(tmp_path / "clip.safetensors")
    assert torch.equal(got.state_dict()["visual.proj"], model.state_dict()["visual.proj"])
    torch.save({"visual.conv1.weight": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(OFAError, match="OpenAI's layout"):
        clip.load(tmp_path / "bad.pt")
    with pytest.raises(OFAError, match="no such"):
        clip.load(tmp_path / "missing.pt")
