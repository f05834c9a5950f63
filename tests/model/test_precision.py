"""bf16 inference: encoder in bf16, decoder in float32, same tokens as float32 on the golden cases."""

from __future__ import annotations

import copy

import pytest
import torch

from support import GOLDEN_GENERATION_CASES, check_golden_tokens


@pytest.fixture(scope="module")
def bf16_model(tiny_model):
    return copy.deepcopy(tiny_model).set_precision(torch.bfloat16, torch.float32)


@pytest.fixture(scope="module")
def folded_models(tiny_model):
    """What ``openofa.load`` runs: the trunk's BatchNorms folded, in float32 and with the bf16 encoder."""
    fp32 = copy.deepcopy(tiny_model).fold_batchnorm()
    return {"fp32": fp32, "bf16": copy.deepcopy(fp32).set_precision(torch.bfloat16, torch.float32)}


@pytest.mark.parametrize("name", GOLDEN_GENERATION_CASES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_folded_trunk_gives_golden_tokens(folded_models, name, precision):
    check_golden_tokens(folded_models[precision], name)


@pytest.mark.parametrize("name", GOLDEN_GENERATION_CASES)
def test_bf16_encoder_gives_golden_tokens(bf16_model, name):
    assert bf16_model.encoder_dtype == torch.bfloat16 and bf16_model.dtype == torch.float32
    check_golden_tokens(bf16_model, name)


def test_set_precision_unties_embeddings_only_when_needed(tiny_model):
    same = copy.deepcopy(tiny_model).set_precision(torch.float32, torch.float32)
    assert same.encoder.embed_tokens is same.decoder.embed_tokens
    mixed = copy.deepcopy(tiny_model).set_precision(torch.bfloat16, torch.float32)
    assert mixed.encoder.embed_tokens.weight.dtype == torch.bfloat16
    assert mixed.decoder.output_projection.weight.dtype == torch.float32
    assert mixed.decoder.output_projection.weight is mixed.decoder.embed_tokens.weight


def test_fold_batchnorm_is_for_inference_and_idempotent():
    from openofa.model.resnet import ResNetTrunk

    trunk = ResNetTrunk((1, 1, 1), width=8)
    with torch.no_grad():  # running statistics far from the identity, so folding has work to do
        for m in trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    with pytest.raises(RuntimeError, match="eval"):
        trunk.fold_batchnorm()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = trunk.eval()(x)
        trunk.fold_batchnorm()
        once = trunk(x)
        trunk.fold_batchnorm()
        twice = trunk(x)
    assert (once - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    assert torch.equal(once, twice)
    keys = trunk.state_dict().keys()
    assert not any("bn" in k for k in keys) and "conv1.bias" in keys and "layer1.0.downsample.0.bias" in keys
    assert trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
