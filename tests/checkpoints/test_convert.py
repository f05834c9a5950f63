"""Format detection, conversion between all layouts, and building a model from a checkpoint."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from openofa.errors import OFAError
from openofa.checkpoints import convert, detect_format, load_checkpoint, load_model, save_checkpoint, save_official
from openofa.checkpoints.keys import official_keys

FORMATS = ["ours", "official", "hf"]


def _dst(tmp_path, name, fmt):
    return tmp_path / (f"{name}.pt" if fmt == "official" else name)


def _same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("src_fmt,dst_fmt", list(itertools.product(FORMATS, FORMATS)))
def test_round_trip_every_direction(micro, tmp_path, src_fmt, dst_fmt):
    config, sd = micro
    src = save_checkpoint(_dst(tmp_path, "src", src_fmt), config, sd, fmt=src_fmt)
    assert detect_format(src) == src_fmt
    dst = convert(src, _dst(tmp_path, "dst", dst_fmt), fmt=dst_fmt)
    assert detect_format(dst) == dst_fmt
    back = convert(dst, _dst(tmp_path, "back", src_fmt), fmt=src_fmt)
    for path in (dst, back):
        loaded_config, loaded, meta = load_checkpoint(path)
        # the file's task settings travel in config.extra["task"] (an official file always has some)
        settings = {**loaded_config.extra.get("task", {}), **(meta.get("task") or {})}
        assert dataclasses.replace(loaded_config, extra={}) == config
        if "official" in (src_fmt, dst_fmt):
            assert settings["patch_image_size"] == config.patch_image_size
            assert settings["imagenet_default_mean_and_std"] is False
        else:
            assert settings == {}
        _same(loaded, sd)
        assert meta["notes"] == []


def test_task_settings_survive_every_format(micro, tmp_path):
    """A file's preprocessing and prompt settings are written by convert into every format."""
    config, sd = micro
    settings = {"_name": "image_classify", "imagenet_default_mean_and_std": True, "patch_image_size": 384,
                "prompt_type": "none"}
    src = save_official(tmp_path / "src.pt", config, sd, task=settings)
    for fmt in FORMATS:
        dst = convert(src, _dst(tmp_path, f"dst_{fmt}", fmt), fmt=fmt)
        got = load_checkpoint(dst)
        kept = {**got[0].extra.get("task", {}), **(got[2].get("task") or {})}
        assert {k: kept[k] for k in settings} == settings, fmt


def test_convert_ema(micro, tmp_path):
    config, sd = micro
    ema = {k: v * 2 if v.is_floating_point() else v for k, v in sd.items()}
    for k in ("decoder.embed_tokens.weight", "decoder.output_projection.weight"):
        ema[k] = ema["encoder.embed_tokens.weight"]
    src = save_official(tmp_path / "ema.pt", config, sd, ema_state_dict=ema)
    out = convert(src, tmp_path / "ema_ours", ema=True)
    _same(load_checkpoint(out)[1], {k: ema[k] for k in sd})
    with pytest.raises(OFAError, match="EMA"):
        load_checkpoint(out, ema=True)


def test_detection_errors(micro, tmp_path):
    config, sd = micro
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    lone = tmp_path / "lone"
    lone.mkdir()
    save_checkpoint(tmp_path / "ours", config, sd)
    (lone / "w.safetensors").write_bytes((tmp_path / "ours" / "model.safetensors").read_bytes())
    cases = {
        tmp_path / "nothing": "no such file",
        empty: "no config.json",
        other: "neither",
        lone / "w.safetensors": "config.json next to it",
        tmp_path / "ours" / "config.json": "holds no weights",
    }
    for path, fragment in cases.items():
        with pytest.raises(OFAError) as err:
            load_checkpoint(path)
        assert fragment in str(err.value) and str(path) in str(err.value)
    with pytest.raises(OFAError, match="unknown checkpoint format"):
        convert(tmp_path / "ours", tmp_path / "x", fmt="onnx")


@pytest.fixture(scope="module")
def tiny_folder(tiny, tmp_path_factory):
    config, sd = tiny
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "ofa-tiny", config, sd)


def test_model_state_dict_keys_are_ours(tiny):
    from openofa.model import build_model

    config, _ = tiny
    model_sd = build_model(config).state_dict()
    expected = official_keys(config, computed=False)
    assert set(model_sd) == set(expected)
    assert {k: tuple(v.shape) for k, v in model_sd.items()} == dict(expected)


def test_load_model(tiny, tiny_folder):
    config, sd = tiny
    model = load_model(tiny_folder)
    assert not model.training
    assert model.checkpoint_meta["format"] == "ours"
    loaded = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    emb = model.encoder.embed_tokens.weight
    assert model.decoder.embed_tokens.weight is emb

    model64 = load_model(tiny_folder, dtype=torch.float64, device="cpu")
    assert model64.encoder.embed_tokens.weight.dtype == torch.float64
    assert torch.equal(model64.encoder.layer_norm.weight, sd["encoder.layer_norm.weight"].double())
