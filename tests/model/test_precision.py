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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_trunk_path_computes_the_plain_one(dtype, monkeypatch):
    """A folded trunk at inference on CPU runs each convolution with its ReLU and shortcut as one
    oneDNN call: the same features as the unfused modules (float32 to rounding, bf16 within its
    precision); training, autograd and tracing (ONNX export) keep standard operators."""
    import openofa.model.resnet as resnet

    if not resnet._HAS_FUSED_CONV:
        pytest.skip("this torch build has no oneDNN convolution fusion")
    torch.manual_seed(0)
    trunk = resnet.ResNetTrunk((2, 1, 2), width=8).eval().fold_batchnorm().to(dtype)
    x = torch.randn(2, 3, 64, 64).to(dtype)
    calls = []
    conv = resnet._conv_pointwise
    monkeypatch.setattr(resnet, "_conv_pointwise", lambda *a: calls.append(a[2]) or conv(*a))
    with torch.no_grad():
        fused = trunk(x)
        assert calls.count("relu") == 1 + 2 * 5 and calls.count("none") == 3  # stem, 2 per block, 3 downsamples
        monkeypatch.setattr(resnet, "_HAS_FUSED_CONV", False)
        plain = trunk(x)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (fused.float() - plain.float()).abs().max().item() <= tol * plain.float().abs().max().item()
    monkeypatch.setattr(resnet, "_HAS_FUSED_CONV", True)
    assert not resnet._fusable(x, trunk.layer1[0])  # autograd on
    with torch.no_grad():
        assert resnet._fusable(x, trunk.layer1[0])
        assert not resnet._fusable(x, trunk.train().layer1[0])
        traced = torch.jit.trace(trunk.eval(), x, check_trace=False)
    assert "mkldnn" not in str(traced.inlined_graph)
