"""Our own folder format: config.json with a format marker + model.safetensors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from openofa.errors import OFAError
from openofa.checkpoints import load_checkpoint, load_pretrained, save_pretrained
from openofa.checkpoints.keys import TIED_KEYS, is_computed, official_keys


def _same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_round_trip(micro, tmp_path):
    config, sd = micro
    config = dataclasses.replace(config, patch_image_size=384, dropout=0.1, extra={"note": "hello", "n": [1, 2]})
    folder = save_pretrained(tmp_path / "m", config, sd)
    data = json.loads((folder / "config.json").read_text())
    assert data["format"] == "openofa" and data["format_version"] == 1 and data["patch_image_size"] == 384

    stored = load_file(str(folder / "model.safetensors"))
    expected = set(official_keys(config, computed=False)) - set(TIED_KEYS)
    assert set(stored) == expected  # tied embedding once, no computed buffers
    assert not any(is_computed(k) for k in stored)

    loaded_config, loaded, meta = load_pretrained(folder)
    assert loaded_config == config and meta["format"] == "ours"
    _same(loaded, sd)
    for k in TIED_KEYS:
        assert loaded[k] is loaded["encoder.embed_tokens.weight"]
    # through the generic entry point, by folder and by weights file
    assert load_checkpoint(folder)[0] == config
    _same(load_checkpoint(folder / "model.safetensors")[1], sd)


def test_saving_accepts_computed_buffers_and_missing_tied_keys(micro, tmp_path):
    from openofa.checkpoints.keys import with_computed_buffers

    config, sd = micro
    full = with_computed_buffers(config, sd)
    del full["decoder.output_projection.weight"]
    save_pretrained(tmp_path / "m", config, full)
    _same(load_pretrained(tmp_path / "m")[1], sd)


def test_load_prepares_the_model_for_cpu_inference(micro, tmp_path):
    import openofa

    config, sd = micro
    folder = save_pretrained(tmp_path / "m", config, sd)
    model = openofa.load(folder, dtype="bf16", decoder_dtype="bf16").model
    assert not any("bn" in k for k in model.state_dict())  # BatchNorms folded into the trunk
    assert model.decoder.output_projection.is_packed and model.decoder.layers[0].fc1.is_packed
    lean = openofa.load(folder, dtype="bf16", decoder_dtype="bf16", prepack=False).model
    assert not lean.decoder.output_projection.is_packed
    # micro's float32 weights are all below the packing size: packed only where the probe
    # measured the packed product faster on this CPU (once per shape and process)
    from openofa.model.linear import packed_is_faster

    plain = openofa.load(folder).model
    w = plain.decoder.output_projection.weight
    assert plain.decoder.output_projection.is_packed == packed_is_faster(*w.shape)
    assert openofa.load(folder).model.prepack(probe=False) == 0


def test_errors(micro, tmp_path):
    config, sd = micro
    folder = save_pretrained(tmp_path / "m", config, sd)
    data = json.loads((folder / "config.json").read_text())

    (folder / "config.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(OFAError, match="format_version"):
        load_pretrained(folder)

    (folder / "config.json").write_text(json.dumps({**data, "bogus_field": 1}))
    with pytest.raises(OFAError, match="bogus_field"):
        load_pretrained(folder)

    (folder / "config.json").write_text("{not json")
    with pytest.raises(OFAError, match="not valid JSON"):
        load_pretrained(folder)

    (folder / "config.json").write_text(json.dumps({**data, "encoder_layers": 2}))
    with pytest.raises(OFAError, match="missing.*encoder.layers.1"):
        load_pretrained(folder)

    (folder / "config.json").write_text(json.dumps(data))
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["encoder.extra.weight"] = torch.zeros(1)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(OFAError, match="unexpected encoder.extra.weight"):
        load_pretrained(folder)

    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(OFAError, match="model.safetensors"):
        load_pretrained(folder)

    (folder / "model.safetensors").unlink()
    with pytest.raises(OFAError, match="no model.safetensors"):
        load_pretrained(folder)

    with pytest.raises(OFAError, match="JSON"):
        save_pretrained(tmp_path / "x", dataclasses.replace(config, extra={"t": torch.ones(1)}), sd)
    with pytest.raises(OFAError, match="missing"):
        save_pretrained(tmp_path / "x", config, {k: v for k, v in sd.items() if "fc1" not in k})


@pytest.mark.parametrize("speedup, encoder", [(2.5, torch.bfloat16), (0.6, torch.float32)])
def test_load_with_auto_precision(micro, tmp_path, monkeypatch, speedup, encoder):
    import openofa
    from openofa import precision

    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    config, sd = micro
    model = openofa.load(save_pretrained(tmp_path / "m", config, sd), dtype="auto").model
    assert model.encoder_dtype is encoder
    assert model.decoder.embed_positions.weight.dtype is torch.float32  # the decoder stays float32
