"""model_from_state_dict: the weights built on the meta device and assigned, not copied."""

from __future__ import annotations

import pytest
import torch

from openofa.checkpoints import recipe_state_dict
from openofa.config import get_config
from openofa.errors import OFAError
from openofa.model import OFAModel, model_from_state_dict

MICRO = dict(encoder_layers=1, decoder_layers=2, vocab_size=700, num_bins=100, code_dict_size=64,
             image_bucket_size=8, token_bucket_size=32, max_source_positions=64, max_target_positions=64)


@pytest.fixture(scope="module")
def micro():
    config = get_config("tiny", **MICRO)
    return config, recipe_state_dict(config)


def _copied(config, sd):
    model = OFAModel(config)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def test_same_weights_and_outputs_as_copying_into_a_built_model(micro):
    config, sd = micro
    model = model_from_state_dict(config, sd).eval()
    ref = _copied(config, sd)
    got, want = model.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) and got[k].dtype == want[k].dtype for k in want)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    # the shared vocabulary stays one tensor: encoder, decoder and output projection
    assert model.encoder.embed_tokens is model.decoder.embed_tokens
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    src = torch.tensor([[0, 40, 41, 2]])
    prev = torch.tensor([[0, 50, 51]])
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = model(src, None, images, torch.tensor([True]), prev)
        b = ref(src, None, images, torch.tensor([True]), prev)
    assert torch.equal(a, b)


def test_half_precision_weights_become_float32(micro):
    config, sd = micro
    model = model_from_state_dict(config, {k: v.half() if v.is_floating_point() else v for k, v in sd.items()})
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight


def test_training_after_loading_updates_the_tied_table(micro):
    config, sd = micro
    model = model_from_state_dict(config, sd)
    assert all(p.requires_grad for p in model.parameters())
    logits = model(torch.tensor([[0, 40, 2]]), None, None, None, torch.tensor([[0, 50]]))
    logits.sum().backward()
    assert model.decoder.embed_tokens.weight.grad is not None  # one table, gradients from both uses


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("decoder.layer_norm.weight"), "Missing key"),
    (lambda sd: sd.__setitem__("decoder.layer_norm.weight", torch.ones(3)), "size mismatch"),
    (lambda sd: sd.__setitem__("decoder.extra.weight", torch.ones(3)), "Unexpected key"),
])
def test_weights_that_do_not_fit_are_one_line_errors(micro, edit, message):
    config, sd = micro
    sd = dict(sd)
    edit(sd)
    with pytest.raises(OFAError, match=f"my.pt: weights do not fit.*{message}") as err:
        model_from_state_dict(config, sd, source="my.pt")
    assert "\n" not in str(err.value)


def test_images_larger_than_the_position_table_are_one_line_errors(micro):
    config, sd = micro  # image_bucket_size 8: 8 patches of 16 pixels a side
    model = model_from_state_dict(config, sd).eval()
    assert model.max_image_size == 128
    src = torch.tensor([[0, 40, 2]])
    with torch.inference_mode():
        assert model.encode(src, None, torch.zeros(1, 3, 128, 96), torch.tensor([True])).image_grid == (8, 6)
        with pytest.raises(OFAError, match=r"images of 96x129 pixels: .* at most 128 pixels a side"):
            model.encode(src, None, torch.zeros(1, 3, 129, 96), torch.tensor([True]))


def test_loading_a_model_does_not_import_the_compiler():
    """Building the modules to load weights into runs no initialiser (on the meta device their
    reference kernels import torch._dynamo, a second of start-up for a one-image command)."""
    import subprocess
    import sys

    code = ("import sys, openofa\nm = openofa.load()\nm.caption(__import__('openofa.mini.scenes', fromlist=['x'])"
            ".make_scene(0, (128, 128)).image)\nprint('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_skipping_initialisers_while_loading_leaves_other_threads_alone():
    import threading

    import torch
    from torch import nn

    from openofa.model.ofa import _no_init

    seen = {}

    def other():
        layer = nn.Linear(64, 64)
        seen["std"] = float(layer.weight.detach().std())

    with _no_init():
        t = threading.Thread(target=other)
        t.start()
        t.join()
        skipped = torch.zeros(8)
        nn.init.normal_(skipped)
    assert seen["std"] > 0.01 and torch.equal(skipped, torch.zeros(8))
    done = torch.zeros(8)
    nn.init.normal_(done)
    assert done.std() > 0.1
