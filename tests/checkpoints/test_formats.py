"""The format registry: every format gives back exactly the model it was given (config fields,
every tensor and its dtype) or refuses it before writing anything; ``convert`` keeps dtypes and
never writes onto its own source."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from openofa.errors import OFAError
from openofa.checkpoints import convert, load_checkpoint, save_checkpoint
from openofa.checkpoints.formats import FORMATS
from openofa.weights import bundled_model


def _dst(tmp_path, name, fmt):
    return tmp_path / (f"{name}.pt" if fmt == "official" else name)


def _cast(sd, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


def _assert_same_model(got, want):
    (gc, gsd), (wc, wsd) = got, want
    assert gc == wc  # every field, config.extra included
    assert list(gsd) == list(wsd)
    for k in wsd:
        assert gsd[k].dtype == wsd[k].dtype and torch.equal(gsd[k], wsd[k]), k


@pytest.fixture(scope="module")
def models(micro):
    """Models every format can hold: float32, float16 and bfloat16 weights; task settings (a nested
    one too) and the config fields the original's cfg has no argument for."""
    config, sd = micro
    rich = dataclasses.replace(config, location_embedding_init="fourier", text_vocab="scenes", extra={"task": {
        "patch_image_size": 480, "prompt_type": "none", "ground_prompt_type": "prev_output",
        "generation": {"caption": {"max_len_b": 40}}}})
    return {
        "float32": (config, sd),
        "float16": (config, _cast(sd, torch.float16)),
        "rich-bfloat16": (rich, _cast(sd, torch.bfloat16)),
    }


def test_the_registry_is_what_the_cli_offers():
    from openofa.cli import build_parser

    assert list(FORMATS) == ["ours", "official", "hf"]
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.description
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["convert"]
    to = next(a for a in sub._actions if a.dest == "to")
    assert list(to.choices) == list(FORMATS)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("kind", ["float32", "float16", "rich-bfloat16"])
def test_load_of_save_is_the_model(models, tmp_path, fmt, kind):
    config, sd = models[kind]
    f = FORMATS[fmt]
    assert f.can_represent(config, sd) is None
    path = f.save(_dst(tmp_path, "m", fmt), config, sd)
    assert f.detect(path) and [n for n, other in FORMATS.items() if other.detect(path)] == [fmt]
    loaded_config, loaded, meta = f.load(path)
    _assert_same_model((loaded_config, loaded), (config, {k: sd[k] for k in loaded}))
    assert meta["notes"] == []
    # load_checkpoint keeps its float32 contract and says what it cast
    _, as32, meta32 = load_checkpoint(path)
    assert all(v.dtype in (torch.float32, torch.int64) for v in as32.values())
    assert ("float32" == kind) == (meta32["notes"] == [])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_convert_keeps_every_dtype(models, tmp_path, fmt):
    config, sd = models["float16"]
    src = save_checkpoint(tmp_path / "src", config, sd)
    out = convert(src, _dst(tmp_path, "out", fmt), fmt=fmt)
    got_config, got, _ = FORMATS[fmt].load(out)
    assert dataclasses.replace(got_config, extra={}) == config
    assert {v.dtype for v in got.values()} == {torch.float16, torch.int64}


@pytest.fixture(scope="module")
def mini():
    path = bundled_model()
    assert path is not None, "the bundled model is part of the package"
    config, sd, _ = FORMATS["ours"].load(path)
    return path, config, sd


def test_the_bundled_model_converts_to_ours_unchanged(mini, tmp_path):
    path, config, sd = mini
    assert {v.dtype for v in sd.values()} == {torch.float16, torch.int64}
    out = convert(path, tmp_path / "mini")
    _assert_same_model(FORMATS["ours"].load(out)[:2], (config, sd))
    assert (out / "model.safetensors").stat().st_size == (path / "model.safetensors").stat().st_size


@pytest.mark.parametrize("fmt,fields", [
    ("official", ["resnet_type='resnet-small'", "resnet_width=32"]),
    ("hf", ["resnet_type='resnet-small'", "resnet_width=32", "max_source_positions=128", "disable_entangle=False"]),
])
def test_the_bundled_model_is_refused_where_it_would_change(mini, tmp_path, fmt, fields):
    path, config, sd = mini
    reason = FORMATS[fmt].can_represent(config, sd)
    assert reason and all(f in reason for f in fields)
    dst = _dst(tmp_path, "mini", fmt)
    for write in (lambda: convert(path, dst, fmt=fmt), lambda: save_checkpoint(dst, config, sd, fmt=fmt)):
        with pytest.raises(OFAError) as err:
            write()
        message = str(err.value)
        assert "\n" not in message and str(dst) in message and all(f in message for f in fields)
        assert not dst.exists() and list(tmp_path.iterdir()) == []


def test_cli_refuses_with_one_line(mini, tmp_path, capsys):
    from openofa.cli import main

    path, _, _ = mini
    code = main(["convert", str(path), str(tmp_path / "mini.pt"), "--to", "official"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "resnet_width=32" in err
    assert not (tmp_path / "mini.pt").exists()


def test_official_refuses_fields_the_original_cannot_hold(micro):
    config, sd = micro
    assert "unk=5" in FORMATS["official"].can_represent(dataclasses.replace(config, unk=5), sd)
    odd = dataclasses.replace(config, extra={"task": {"patch_image_size": 384}})
    assert "patch_image_size" in FORMATS["official"].can_represent(odd, sd)
    for name in FORMATS:
        assert "extra" in FORMATS[name].can_represent(dataclasses.replace(config, extra={"t": torch.ones(1)}), sd)


def test_convert_never_writes_onto_its_source(micro, tmp_path):
    config, sd = micro
    folder = save_checkpoint(tmp_path / "ours", config, sd)
    official = save_checkpoint(tmp_path / "m.pt", config, sd, fmt="official")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    cases = [
        (folder, folder, "ours"),  # the same folder, rewritten in place
        (folder, tmp_path / "ours" / ".." / "ours", "hf"),  # the same, spelled differently
        (folder, folder / "sub", "ours"),  # inside the source
        (folder / "model.safetensors", folder, "hf"),  # the folder holding the source
        (official, tmp_path, "ours"),
        (official, official, "official"),
    ]
    for src, dst, fmt in cases:
        with pytest.raises(OFAError, match="destination"):
            convert(src, dst, fmt=fmt)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fmt", ["ours", "hf"])
def test_a_failed_write_leaves_the_destination_as_it_was(micro, tmp_path, monkeypatch, fmt):
    config, sd = micro
    dst = save_checkpoint(tmp_path / "model", config, sd, fmt=fmt)
    before = {p.name: p.read_bytes() for p in dst.iterdir()}

    import openofa.checkpoints.official as official
    import openofa.checkpoints.ours as ours

    def fail_after(write):
        def wrapped(*args, **kwargs):
            write(*args, **kwargs)  # the weights are written, then the disk fills up
            raise OSError("no space left on device")
        return wrapped

    monkeypatch.setattr(ours, "write_safetensors", fail_after(ours.write_safetensors))
    monkeypatch.setattr(official, "atomic_torch_save", fail_after(official.atomic_torch_save))
    other = {k: v * 2 if v.is_floating_point() else v for k, v in sd.items()}
    with pytest.raises(OSError):
        save_checkpoint(dst, config, other, fmt=fmt)
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
