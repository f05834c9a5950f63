"""The Hugging Face port's folder layout: key table, config fields, bin/safetensors/sharded weights."""

from __future__ import annotations

import dataclasses

import json

import pytest
import torch

from openofa.config import get_config
from openofa.errors import OFAError
from openofa.checkpoints import load_checkpoint, save_hf
from openofa.checkpoints.hf import config_to_hf, from_hf_name, hf_key_table, hf_state_dict, to_hf_name
from openofa.checkpoints.keys import official_keys


def _same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_key_table_follows_the_documented_renames():
    pairs = {
        "encoder.layers.3.attn_ln.weight": "encoder.layers.3.self_attn_mid_layer_norm.weight",
        "decoder.layers.0.self_attn_ln.bias": "decoder.layers.0.self_attn_mid_layer_norm.bias",
        "decoder.layers.1.cross_attn_ln.weight": "decoder.layers.1.cross_attn_mid_layer_norm.weight",
        "encoder.layers.0.ffn_layernorm.weight": "encoder.layers.0.ffn_layer_norm.weight",
        "decoder.layers.2.ffn_layernorm.bias": "decoder.layers.2.ffn_layer_norm.bias",
        "decoder.layers.0.encoder_attn.q_proj.weight": "decoder.layers.0.cross_attn.q_proj.weight",
        "decoder.layers.0.encoder_attn.c_attn": "decoder.layers.0.cross_attn.c_attn",
        "decoder.layers.0.encoder_attn_layer_norm.weight": "decoder.layers.0.cross_attn_layer_norm.weight",
        # unchanged
        "decoder.layers.0.self_attn.k_proj.weight": "decoder.layers.0.self_attn.k_proj.weight",
        "encoder.layers.0.self_attn.c_attn": "encoder.layers.0.self_attn.c_attn",
        "encoder.layers.0.self_attn_layer_norm.weight": "encoder.layers.0.self_attn_layer_norm.weight",
        "decoder.layers.0.final_layer_norm.weight": "decoder.layers.0.final_layer_norm.weight",
        "encoder.embed_images.layer1.0.downsample.1.running_var": "encoder.embed_images.layer1.0.downsample.1.running_var",
        "decoder.image_position_idx": "decoder.image_position_idx",
        "decoder.output_projection.weight": "decoder.output_projection.weight",
        "encoder.token_rel_pos_table_list.0.weight": "encoder.token_rel_pos_table_list.0.weight",
    }
    for ours, hf in pairs.items():
        assert to_hf_name(ours) == hf and from_hf_name(hf) == ours


@pytest.mark.parametrize("size", ["tiny", "large"])
def test_key_table_is_a_bijection(size):
    config = get_config(size)
    table = hf_key_table(config)
    assert set(table) == set(official_keys(config)) - {"encoder.version", "decoder.version"}
    assert len(set(table.values())) == len(table)
    assert all(from_hf_name(hf) == ours for ours, hf in table.items())
    assert not any("encoder_attn" in hf or "attn_ln" in hf or "ffn_layernorm" in hf for hf in table.values())


@pytest.mark.parametrize("weights", ["bin", "safetensors", "both"])
def test_save_and_load(micro, tmp_path, weights):
    config, sd = micro
    folder = save_hf(tmp_path / "hf", config, sd, weights=weights)
    files = {p.name for p in folder.iterdir()}
    assert "config.json" in files
    assert ("pytorch_model.bin" in files) == (weights in ("bin", "both"))
    assert ("model.safetensors" in files) == (weights in ("safetensors", "both"))
    loaded_config, loaded, meta = load_checkpoint(folder)
    assert loaded_config == config and meta["format"] == "hf"
    _same(loaded, sd)
    assert loaded["decoder.output_projection.weight"] is loaded["encoder.embed_tokens.weight"]
    # a single weights file next to its config.json works too
    name = "model.safetensors" if weights != "bin" else "pytorch_model.bin"
    _same(load_checkpoint(folder / name)[1], sd)


def test_a_port_style_folder_without_our_extra_fields(tiny, tmp_path):
    """What the port itself writes: its own config fields only, every tensor under its names; its
    decoder adds no input positions, so the model read has disable_entangle."""
    config, sd = tiny
    config = dataclasses.replace(config, disable_entangle=True)
    folder = tmp_path / "OFA-tiny"
    folder.mkdir()
    hf_config = {k: v for k, v in config_to_hf(config).items()
                 if k not in ("unk", "num_bins", "code_dict_size", "patch_image_size", "language", "scale_heads")}
    hf_config["transformers_version"] = "4.18.0.dev0"
    (folder / "config.json").write_text(json.dumps(hf_config))
    torch.save(hf_state_dict(config, sd), folder / "pytorch_model.bin")
    hf_config.pop("disable_entangle")  # a port config of its first release has no such entry either
    (folder / "config.json").write_text(json.dumps(hf_config))
    loaded_config, loaded, _ = load_checkpoint(folder)
    assert loaded_config == config  # scale_heads from the c_attn keys, the rest from the defaults
    _same(loaded, sd)


def test_models_the_port_cannot_hold_are_refused(tiny):
    """The port never adds the decoder's input positions: an arch-default model (the original
    without --disable-entangle) has no place in its layout."""
    config, _ = tiny
    assert not config.disable_entangle
    with pytest.raises(OFAError, match="disable_entangle"):
        config_to_hf(config)
    with pytest.raises(OFAError, match="entangle_position_embedding"):
        config_to_hf(dataclasses.replace(config, disable_entangle=True, entangle_position_embedding=True))


def test_config_defaults_prefix_and_flags(micro, tmp_path):
    config, sd = micro
    hf_config = config_to_hf(config)
    for absent in ("dropout", "attention_dropout", "pad_token_id", "language", "scale_heads"):
        hf_config.pop(absent)
    hf_config["normformer"] = False  # contradicted by the tensors: they win, with a note
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config))
    tensors = {"model." + k: v for k, v in hf_state_dict(config, sd).items()}
    torch.save(tensors, folder / "pytorch_model.bin")
    loaded_config, loaded, meta = load_checkpoint(folder)
    assert loaded_config.dropout == 0.1  # the port's default
    assert loaded_config.scale_attn and loaded_config.scale_fc and loaded_config.scale_heads
    assert any("normformer" in n for n in meta["notes"])
    _same(loaded, sd)


def test_sharded_safetensors(micro, tmp_path):
    from safetensors.torch import save_file

    config, sd = micro
    tensors = {k: v.contiguous() for k, v in hf_state_dict(config, sd).items()
               if k not in ("decoder.embed_tokens.weight", "decoder.output_projection.weight")}
    names = list(tensors)
    folder = tmp_path / "sharded"
    folder.mkdir()
    weight_map = {}
    for i, chunk in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in chunk}, str(folder / shard))
        weight_map.update({k: shard for k in chunk})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config_to_hf(config)))
    _same(load_checkpoint(folder)[1], sd)


def test_errors(micro, tmp_path):
    config, sd = micro
    folder = save_hf(tmp_path / "hf", config, sd)
    data = json.loads((folder / "config.json").read_text())

    (folder / "config.json").write_text(json.dumps({**data, "scale_embedding": True}))
    with pytest.raises(OFAError, match="scale_embedding"):
        load_checkpoint(folder)

    (folder / "config.json").write_text(json.dumps({**data, "d_model": 512}))
    with pytest.raises(OFAError, match="wrong shapes"):
        load_checkpoint(folder)

    (folder / "config.json").write_text(json.dumps(data))
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(OFAError, match="no weights"):
        load_checkpoint(folder)

    (folder / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(OFAError, match="pytorch_model.bin"):
        load_checkpoint(folder)

    with pytest.raises(OFAError, match="scale_resids"):
        save_hf(tmp_path / "x", get_config("tiny", scale_resids=True), {})
    with pytest.raises(OFAError, match="normformer"):
        save_hf(tmp_path / "x", get_config("tiny", scale_fc=False), {})
    with pytest.raises(OFAError, match="max_position_embeddings"):
        save_hf(tmp_path / "x", get_config("tiny", max_target_positions=512), {})
