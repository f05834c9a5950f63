"""int8 decoder linear layers (CPU; measured, not a load mode): judged by quality against float32,
not by identical tokens."""

from __future__ import annotations

import copy

import pytest
import torch

from openofa.errors import OFAError
from openofa.model.int8 import Int8Linear, quantize_model
from support import GOLDEN_GENERATION_CASES, check_golden_near_ties


@pytest.fixture(scope="module")
def pair(tiny_model):
    fp32 = copy.deepcopy(tiny_model).fold_batchnorm()
    int8 = copy.deepcopy(fp32)
    assert quantize_model(int8) == sum(1 for m in fp32.decoder.modules() if type(m).__name__ == "Linear") - 1
    assert not isinstance(int8.decoder.output_projection, Int8Linear)  # tied to the embedding: stays float
    assert int8.decoder.output_projection.weight is int8.decoder.embed_tokens.weight
    return fp32, int8


def test_int8_layer_is_close_to_float32_but_not_equal():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    from openofa.model.linear import Linear

    ours = Linear(64, 48)
    ours.load_state_dict(lin.state_dict())
    q = Int8Linear(ours)
    x = torch.randn(3, 5, 64)
    want, got = lin(x), q(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    err = (got - want).abs().max() / want.abs().max()
    assert 0 < err < 0.05  # really quantised, and within int8's ~1-2 % per product


@pytest.mark.parametrize("name", GOLDEN_GENERATION_CASES)
def test_golden_best_hypotheses_equal_float32_except_near_ties(pair, name):
    check_golden_near_ties(*pair, name)


def test_bundled_model_held_out_quality_within_one_point(tmp_path):
    from openofa import OFA
    from openofa.evaluate import evaluate
    from openofa.mini.scenes import write_dataset

    files = write_dataset(tmp_path, n=30, seed=0)
    fp32, int8 = OFA.load(), OFA.load()
    quantize_model(int8.model)
    assert isinstance(int8.model.decoder.layers[0].fc1, Int8Linear)
    assert not isinstance(int8.model.encoder.layers[0].fc1, Int8Linear)
    for task, file, metric in [("vqa", "vqa", "VQA accuracy"), ("ground", "ground", "Acc@0.5"),
                               ("caption", "caption", "CIDEr-D")]:
        want = evaluate(fp32, task, files[file], progress=False, limit=60)[metric]
        got = evaluate(int8, task, files[file], progress=False, limit=60)[metric]
        # 1 point (metrics are fractions), or one example of these 60 where that is more
        # (docs/benchmarks.md, "Reduced precision")
        assert abs(got - want) <= max(0.01, 1 / 60 + 1e-6), (metric, want, got)


def test_int8_on_a_non_cpu_device_is_one_line_error(capsys, tmp_path):
    from PIL import Image

    from openofa import OFA
    from openofa.cli import main

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")

    with pytest.raises(OFAError, match="int8 runs on CPU only, not on cuda"):
        OFA.load(dtype="int8", device="cuda")
    assert main(["caption", "--dtype", "int8", "--device", "cuda:0", str(tmp_path / "a.png")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: dtype int8 runs on CPU only, not on cuda:0; use bf16 or fp16 there"
    assert not any("Traceback" in line for line in err)


def test_quantize_refuses_unmerged_lora_and_other_devices(tiny_model):
    from openofa.model.int8 import quantize_linears

    m = copy.deepcopy(tiny_model)
    fc1 = m.decoder.layers[0].fc1
    fc1.add_module("lora_A", torch.nn.Linear(fc1.in_features, 2, bias=False))
    with pytest.raises(OFAError, match="LoRA updates merged"):
        quantize_linears(m.decoder)
    with pytest.raises(OFAError, match="CPU only; the model is on meta"):
        quantize_model(copy.deepcopy(tiny_model).to("meta"))
