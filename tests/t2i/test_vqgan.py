"""The GumbelVQ image tokenizer against the original's outputs (recipe weights, fixture in
``fixtures/t2i``): key layout, decoding a code grid, deterministic and Gumbel encoding, and
loading a Lightning ``last.ckpt`` + ``model.yaml`` through the safe loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openofa import vqgan
from openofa.checkpoints.recipe import recipe_tensor, state_dict_digest
from openofa.errors import OFAError

FIX = Path(__file__).parent.parent / "fixtures" / "t2i"


@pytest.fixture(scope="module")
def meta():
    return json.loads((FIX / "vqgan.json").read_text())


@pytest.fixture(scope="module")
def recipe_sd(meta):
    return {k: recipe_tensor(k, s) for k, s, _ in meta["state_dict"]}


@pytest.fixture(scope="module")
def model(recipe_sd):
    return vqgan.build_from_state_dict(recipe_sd)


@pytest.fixture(scope="module")
def fix():
    return np.load(FIX / "vqgan_decode.npz")


def test_keys_and_config_are_the_originals(meta, recipe_sd):
    assert vqgan.state_dict_keys() == {k: tuple(s) for k, s, _ in meta["state_dict"]}
    assert state_dict_digest(recipe_sd) == meta["recipe_digest_sha256"]
    cfg = vqgan.config_from_yaml(meta["config"])
    assert (cfg.n_embed, cfg.embed_dim, cfg.factor, cfg.ch_mult) == (8192, 256, 8, (1, 1, 2, 4))


def test_decode_equals_the_original(model, fix):
    out = model.decode(torch.from_numpy(fix["codes_grid"]).long())
    assert out.shape == (1, 3, 256, 256)
    np.testing.assert_allclose(out[:, :, ::4, ::4].numpy(), fix["decoded_strided"], atol=1e-4, rtol=0)
    pixels = np.asarray(vqgan.to_pil(out)[0]).astype(int)
    diff = np.abs(pixels - fix["decoded_uint8"].astype(int))
    # truncation to 8 bits: a float32 rounding difference may cross an integer boundary
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_encode_is_argmax_by_default_and_gumbel_on_request(model, fix):
    from PIL import Image

    image = vqgan.from_pil(Image.fromarray(fix["decoded_uint8"]))  # the original's 2x - 1 of a 256 px image
    assert image.shape == (1, 3, 256, 256)
    wide = vqgan.from_pil(Image.new("RGB", (300, 200), (255, 0, 0)))  # short side to 256, centre crop
    assert wide.shape == (1, 3, 256, 256) and torch.allclose(wide[0, 0], torch.ones(256, 256))
    with torch.no_grad():
        pre = model.quant_conv(model.encoder(image))
        logits = model.quantize.proj(pre)
    np.testing.assert_allclose(pre[:, :, ::2, ::2].numpy(), fix["prequant_strided"], atol=1e-4, rtol=0)
    codes = model.encode(image)
    assert codes.shape == (1, 32, 32)
    assert np.array_equal(codes.numpy(), fix["encode_argmax_codes"])
    assert torch.equal(logits.argmax(1), codes)  # no noise by default
    torch.manual_seed(0)  # the original seeds the global generator, then encodes
    noisy = model.encode(image, gumbel=True)
    assert np.array_equal(noisy.numpy(), fix["encode_gumbel_codes_seed0"])
    assert not torch.equal(noisy, codes)


def _save_lightning(path: Path, sd: dict) -> None:
    class ModelCheckpoint:  # a callback object as Lightning pickles it: it must not be imported
        pass

    ModelCheckpoint.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    import sys
    import types

    mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    mod.ModelCheckpoint = ModelCheckpoint
    saved = {k: sys.modules.get(k) for k in ("pytorch_lightning", "pytorch_lightning.callbacks",
                                             "pytorch_lightning.callbacks.model_checkpoint")}
    for k in saved:
        sys.modules[k] = mod
    try:
        torch.save({"epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.0.8",
                    "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5)}},
                    "state_dict": {**sd, "loss.discriminator.main.0.weight": torch.zeros(2)}}, path)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_load_lightning_checkpoint_with_yaml(tmp_path, meta, recipe_sd, model, fix):
    import yaml

    small = vqgan.VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=32,
                              embed_dim=16, n_embed=64, resolution=16)
    torch.manual_seed(0)
    ref = vqgan.GumbelVQ(small).eval()
    _save_lightning(tmp_path / "last.ckpt", ref.state_dict())
    cfg = json.loads(json.dumps(meta["config"]))
    dd = cfg["model"]["params"]["ddconfig"]
    dd.update(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8], z_channels=32, resolution=16)
    cfg["model"]["params"].update(embed_dim=16, n_embed=64)
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(cfg))
    got = vqgan.load(tmp_path)
    codes = torch.randint(0, 64, (2, 4, 4))
    assert torch.equal(got.decode(codes), ref.decode(codes))
    assert got.factor == 2 and got.encode(torch.rand(1, 3, 8, 8) * 2 - 1).shape == (1, 4, 4)
    # the ckpt alone reads model.yaml from beside it
    assert vqgan.load(tmp_path / "last.ckpt").num_codes == 64


def test_refuses_code_and_bad_inputs(tmp_path, model):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "last.ckpt")
    with pytest.raises(OFAError, match="refusing"):
        vqgan.load(tmp_path / "last.ckpt")
    with pytest.raises(OFAError, match="no such file"):
        vqgan.load(tmp_path / "missing.ckpt")
    with pytest.raises(OFAError, match="code ids"):
        model.decode(torch.full((1, 2, 2), 8192))
    with pytest.raises(OFAError, match="multiples of 8"):
        model.encode(torch.zeros(1, 3, 20, 20))
    (tmp_path / "model.yaml").write_text("model:\n  target: taming.models.vqgan.VQModel\n  params: {ddconfig: {}}\n")
    with pytest.raises(OFAError, match="GumbelVQ"):
        vqgan.load(tmp_path / "last.ckpt")
