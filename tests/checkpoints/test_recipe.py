"""Key lists generated from a config, computed buffers, and the recipe weights of weights.md."""

from __future__ import annotations

import json

import pytest
import torch

from openofa.config import get_config
from openofa.checkpoints import recipe_state_dict, recipe_tensor
from openofa.checkpoints.keys import (
    computed_buffers,
    image_bucket_positions,
    infer_from_state_dict,
    is_computed,
    key_dtype,
    official_keys,
    token_bucket_positions,
)
from openofa.checkpoints.recipe import state_dict_digest

SIZES = ["ofa_tiny", "ofa_medium", "ofa_base", "ofa_large", "ofa_huge"]

# weights.md: SHA-256 of the full official state dict, and float64 sums of a few tensors
DIGESTS = {
    "tiny": "199abe506d56f3dd04efd192ca79ccbf4e155dcadf18ac1180a2ecf5b9bd8916",
    "base": "7e7065b3fa65d4b1dfebd5703d123f373011f9e5a72caa436219342b1f7c4455",
}
SUMS = {
    "tiny": {
        "encoder.embed_tokens.weight": -5.2124081815404395,
        "encoder.embed_images.conv1.weight": -3.4340904279702045,
        "encoder.layers.0.self_attn.q_proj.weight": -30.490300317454853,
        "decoder.layers.0.fc1.bias": -0.731013261073258,
        "encoder.embed_images.bn1.running_var": 65.19082146883011,
    },
    "base": {
        "encoder.embed_tokens.weight": -34.41426292424896,
        "encoder.embed_images.conv1.weight": -3.4340904279702045,
        "encoder.layers.0.self_attn.q_proj.weight": -13.751675154549453,
        "decoder.layers.0.fc1.bias": 0.4512708534361991,
        "encoder.embed_images.bn1.running_var": 65.19082146883011,
    },
}


@pytest.fixture(scope="module")
def archs(golden_dir):
    return json.loads((golden_dir / "archs.json").read_text())["archs"]


@pytest.mark.parametrize("arch", SIZES)
def test_official_keys_match_the_reference(archs, arch):
    config = get_config(arch)
    reference = archs[arch]["state_dict_official"]
    keys = official_keys(config)
    assert {k: list(s) for k, s in keys.items()} == {k: s for k, s, _ in reference}
    assert list(keys) == [k for k, _, _ in reference]  # same order as model.state_dict()
    for k, _, dtype in reference:
        assert key_dtype(k) == getattr(torch, dtype), k
    params = sum(torch.Size(s).numel() for k, s in keys.items()
                 if not is_computed(k) and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                 and k not in ("decoder.embed_tokens.weight", "decoder.output_projection.weight"))
    assert params == archs[arch]["num_parameters_official"]


@pytest.mark.parametrize("arch", SIZES)
def test_flags_change_the_key_set_as_documented(archs, arch):
    off = get_config(arch, scale_attn=False, scale_fc=False, scale_heads=False)
    removed = set(official_keys(get_config(arch))) - set(official_keys(off))
    assert removed == set(archs[arch]["keys_only_with_official_flags"])


def test_shape_inference_recovers_the_config():
    for name in ("tiny", "medium", "large", "huge"):
        config = get_config(name)
        fake = {k: torch.empty(s) for k, s in official_keys(config).items()}  # shapes only
        inferred = infer_from_state_dict(fake)
        for field, value in inferred.items():
            assert getattr(config, field) == value, (name, field)
        assert {"resnet_type", "encoder_layers", "decoder_ffn_embed_dim", "code_image_size"} <= set(inferred)


def test_computed_buffers_spot_values():
    tok = token_bucket_positions(256)
    assert tok.shape == (1024, 1024) and tok[0, 0] == 255
    assert tok[5, 0] == 255 + 5 and tok[0, 5] == 255 - 5  # exact region
    assert tok[1023, 0] == 510 and tok[0, 1023] == 0  # far ends of the log region
    img = image_bucket_positions(42)
    assert img.shape == (1765, 1765)
    assert img[0, 0] == 6891 and img[0, 5] == 6889 and img[5, 0] == 6890
    assert img[1, 1] == 41 * 83 + 41  # same patch: zero offset in both directions
    buffers = computed_buffers(get_config("tiny"))
    idx = buffers["decoder.image_position_idx"]
    assert idx[:3].tolist() == [0, 1, 2] and idx[17].item() == 43 and (idx[257:] == 1024).all()


def test_recipe_tensor_rules():
    torch.manual_seed(123)  # the recipe must not depend on the global generator
    a = recipe_tensor("encoder.layers.0.fc1.weight", (8, 4))
    torch.manual_seed(456)
    assert torch.equal(a, recipe_tensor("encoder.layers.0.fc1.weight", (8, 4)))
    assert recipe_tensor("x.bn.num_batches_tracked", ()).dtype == torch.long
    var = recipe_tensor("x.bn.running_var", (1000,))
    assert var.min() >= 0.5 and var.max() < 1.5
    assert abs(recipe_tensor("x.ln.weight", (1000,)).mean().item() - 1.0) < 0.02


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_recipe_digest_and_sums(size):
    config = get_config(size)
    full = recipe_state_dict(config, computed=True)
    for key, value in SUMS[size].items():
        assert full[key].double().sum().item() == pytest.approx(value, rel=1e-12, abs=1e-9), key
    assert state_dict_digest(full) == DIGESTS[size]
    ours = recipe_state_dict(config)
    assert list(ours) == list(official_keys(config, computed=False))
    assert ours["decoder.output_projection.weight"] is ours["encoder.embed_tokens.weight"]
    assert ours["decoder.embed_tokens.weight"] is ours["encoder.embed_tokens.weight"]
