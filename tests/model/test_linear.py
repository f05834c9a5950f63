"""Pre-packed linear weights: the same products as nn.Linear, and never a stale copy."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F

from support import GOLDEN_GENERATION_CASES, check_golden_tokens
from openofa.model.linear import Linear, packing_available


def _linear(out_f=300, in_f=64, dtype=torch.float32):
    torch.manual_seed(0)
    return Linear(in_f, out_f).to(dtype).eval().requires_grad_(False)


def test_this_build_can_pack():
    # the pinned CPU build has oneDNN; without it every product silently takes the plain path
    assert packing_available()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 64), (5, 1, 64), (40, 1, 64)])
def test_packed_product_equals_plain(dtype, shape):
    lin = _linear(dtype=dtype)
    x = torch.randn(*shape).to(dtype)
    want = F.linear(x, lin.weight, lin.bias)
    assert lin.prepack() and lin.is_packed
    got = lin(x)
    assert got.shape == want.shape and got.dtype == dtype
    torch.testing.assert_close(got, want)  # float32: 1.3e-6 relative; bf16: one rounding step


def test_a_weight_changed_after_packing_is_used_not_the_stale_copy():
    lin = _linear()
    lin.prepack()
    x = torch.randn(3, 64)
    with torch.no_grad():
        lin.weight.mul_(2.0)  # in place: the version counter moves
    assert not lin.is_packed
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))
    lin.load_state_dict({"weight": torch.randn(300, 64), "bias": torch.zeros(300)})
    assert not lin.is_packed
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))
    lin.to(torch.bfloat16)
    assert not lin.is_packed
    assert lin(x.bfloat16()).dtype == torch.bfloat16


def test_autograd_takes_the_plain_path():
    lin = _linear().requires_grad_(True)
    lin.prepack()
    x = torch.randn(3, 64, requires_grad=True)
    y = lin(x)
    assert y.grad_fn is not None
    y.sum().backward()
    assert lin.weight.grad is not None and x.grad is not None


def test_copies_and_pickles_drop_the_packed_weight():
    lin = _linear()
    lin.prepack()
    twin = copy.deepcopy(lin)
    assert not twin.is_packed and lin.is_packed
    back = pickle.loads(pickle.dumps(lin))
    x = torch.randn(2, 64)
    torch.testing.assert_close(back(x), lin(x), atol=1e-5, rtol=1e-5)
    buf = io.BytesIO()
    torch.save(lin.state_dict(), buf)
    assert set(lin.state_dict()) == {"weight", "bias"}


def test_model_prepack_packs_the_output_projection_and_keeps_the_golden_tokens(tiny_model, monkeypatch):
    import openofa.model.ofa as ofa_module

    n_linear = sum(isinstance(m, Linear) for m in tiny_model.decoder.modules())
    for precision in ("fp32", "bf16"):
        model = copy.deepcopy(tiny_model).fold_batchnorm()
        if precision == "bf16":
            model.set_precision(torch.bfloat16, torch.float32)
        # without the probe, tiny's float32 weights below 2^20 elements stay plain
        assert model.prepack(probe=False) == 1 and model.decoder.output_projection.is_packed
        assert not model.decoder.layers[0].fc1.is_packed
        for name in GOLDEN_GENERATION_CASES:
            check_golden_tokens(model, name)
        # every weight packed, as the probe may choose on some CPU: the same tokens
        assert model.prepack(min_fp32_size=0) == n_linear
        for name in GOLDEN_GENERATION_CASES:
            check_golden_tokens(model, name)
    # with the probe, the smaller float32 weights pack where it measured the packed product faster
    monkeypatch.setattr(ofa_module, "packed_is_faster", lambda out, inp: (out, inp) == (1024, 256))
    model = copy.deepcopy(tiny_model)
    assert model.prepack() == 1 + len(model.decoder.layers)  # the output projection and every fc1
    assert model.decoder.layers[0].fc1.is_packed and not model.decoder.layers[0].fc2.is_packed
    full = copy.deepcopy(tiny_model).set_precision(torch.bfloat16, torch.bfloat16)
    assert full.prepack() == n_linear


def test_the_packing_probe_answers_per_shape_once():
    from openofa.model.linear import packed_is_faster, packing_available

    packed_is_faster.cache_clear()
    first = packed_is_faster(64, 32)
    assert packed_is_faster(64, 32) is first and packed_is_faster.cache_info().hits == 1
    assert isinstance(first, bool) and (packing_available() or first is False)
