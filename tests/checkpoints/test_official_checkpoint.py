"""Official (fairseq) checkpoints: new cfg-style and old args-style files, EMA, old key names,
and every way a checkpoint can fail to match its config."""

from __future__ import annotations

import argparse
import collections

import numpy as np
import pytest
import torch

from openofa.config import get_config
from openofa.errors import OFAError
from openofa.checkpoints import load_checkpoint, recipe_state_dict, save_official
from openofa.checkpoints.keys import official_keys, with_computed_buffers
from openofa.checkpoints.official import (
    build_official,
    from_official,
    model_hyperparameters,
    task_hyperparameters,
)
from openofa.checkpoints.recipe import state_dict_digest

TINY_DIGEST = "199abe506d56f3dd04efd192ca79ccbf4e155dcadf18ac1180a2ecf5b9bd8916"  # weights.md


def _same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _training_leftovers():
    """What a real trainer checkpoint carries besides the weights."""
    metrics = collections.OrderedDict(
        train=[(0, "loss", "AverageMeter", {"val": np.float64(2.5), "sum": np.float32(10.0), "count": np.int64(4)})],
        default=[(100, "wall", "StopwatchMeter", {"sum": 12.5, "n": 3, "start_time": None})],
    )
    optimizer = {
        "state": {0: {"step": np.int64(10), "exp_avg": torch.randn(4, 3), "exp_avg_sq": torch.rand(4, 3)}},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "params": [0]}],
    }
    return metrics, optimizer


def test_new_style_checkpoint_with_optimizer_and_ema(tmp_path, tiny):
    config, sd = tiny
    ema = {k: (v * 0.5 if v.is_floating_point() else v) for k, v in sd.items()}
    ema["decoder.embed_tokens.weight"] = ema["decoder.output_projection.weight"] = ema["encoder.embed_tokens.weight"]
    ckpt = build_official(config, sd, ema_state_dict=ema)
    metrics, optimizer = _training_leftovers()
    ckpt["extra_state"]["metrics"] = metrics
    ckpt["extra_state"]["val_loss"] = np.float64(3.25)
    ckpt["optimizer_history"][0]["num_updates"] = np.int64(1234)
    ckpt["last_optimizer_state"] = optimizer
    path = tmp_path / "checkpoint_best.pt"
    torch.save(ckpt, path)

    loaded_config, loaded, meta = load_checkpoint(path)
    assert loaded_config == config
    _same(loaded, sd)
    assert loaded["decoder.output_projection.weight"] is loaded["encoder.embed_tokens.weight"]
    assert loaded["decoder.embed_tokens.weight"] is loaded["encoder.embed_tokens.weight"]
    assert meta["format"] == "official" and meta["arch"] == "ofa_tiny" and meta["num_updates"] == 1234
    assert meta["ema"] is False and meta["task"]["patch_image_size"] == config.patch_image_size
    # the file round-trips the reference recipe exactly, computed buffers included
    assert state_dict_digest(with_computed_buffers(loaded_config, loaded)) == TINY_DIGEST

    _, ema_loaded, ema_meta = load_checkpoint(path, ema=True)
    assert ema_meta["ema"] is True
    _same(ema_loaded, {k: ema[k] for k in sd})


def test_ema_requested_but_absent(micro, tmp_path):
    config, sd = micro
    path = save_official(tmp_path / "noema.pt", config, sd)
    with pytest.raises(OFAError, match="EMA"):
        load_checkpoint(path, ema=True)


def test_save_official_layout(micro, tmp_path):
    config, sd = micro
    ckpt = torch.load(save_official(tmp_path / "m.pt", config, sd), weights_only=True)
    assert {"args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state"} <= set(ckpt)
    assert ckpt["args"] is None and ckpt["criterion"] is None and "last_optimizer_state" not in ckpt
    assert list(ckpt["model"]) == list(official_keys(config))
    for k, shape in official_keys(config).items():
        assert tuple(ckpt["model"][k].shape) == shape, k
    assert torch.equal(ckpt["model"]["encoder.version"], torch.tensor([3.0]))
    m = ckpt["model"]
    assert m["decoder.output_projection.weight"].data_ptr() == m["encoder.embed_tokens.weight"].data_ptr()
    assert ckpt["cfg"]["model"]["_name"] == "ofa_large"  # not a published size: the base arch function
    assert ckpt["cfg"]["model"]["encoder_layers"] == 1 and ckpt["cfg"]["task"]["num_bins"] == 100
    assert ckpt["cfg"]["model"]["scale_heads"] is True


def _old_model_dict(config, sd):
    """The full state dict with the names very old fairseq versions used."""
    full = with_computed_buffers(config, sd)
    old = collections.OrderedDict()
    fused = {}
    for k, v in full.items():
        for side, names in (("encoder", ["self_attn_layer_norm", "final_layer_norm"]),
                            ("decoder", ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"])):
            for i, name in enumerate(names):
                marker = f".{name}."
                if k.startswith(f"{side}.layers.") and marker in k:
                    k = k.replace(marker, f".layer_norms.{i}.")
        if ".self_attn.q_proj." in k or ".self_attn.k_proj." in k or ".self_attn.v_proj." in k:
            prefix, leaf = k.split(".self_attn.")[0], k.rsplit(".", 1)[1]
            fused.setdefault((prefix, leaf), {})[k.split(".self_attn.")[1].split(".")[0]] = v
            continue
        old[k] = v
    for (prefix, leaf), parts in fused.items():
        old[f"{prefix}.self_attn.in_proj_{leaf}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return old


def _old_args(config, **extra):
    model, task = model_hyperparameters(config), task_hyperparameters(config)
    flat = {**model, **task, "arch": model["_name"], "task": task["_name"], **extra}
    del flat["_name"]
    flat.pop("vocab_size")  # old args never stored it
    return argparse.Namespace(**flat)


def test_old_style_args_namespace_numpy_and_omegaconf_records(micro, tmp_path, fake_omegaconf):
    config, sd = micro
    metrics, optimizer = _training_leftovers()
    path = tmp_path / "old.pt"
    with fake_omegaconf() as fk:
        ckpt = {
            "args": _old_args(config, patch_image_size=384, log_format=fk.LogFormat.simple),
            "model": _old_model_dict(config, sd),
            "optimizer_history": [{"criterion_name": "X", "optimizer_name": "Adam",
                                   "lr_scheduler_state": {"best": np.float32(1.5)}, "num_updates": np.int64(9)}],
            "extra_state": {"metrics": metrics, "train_iterator": {"epoch": np.int64(3)},
                            "scheduler_cfg": fk.DictConfig({"warmup": 100, "schedule": [1, 2]})},
            "last_optimizer_state": optimizer,
        }
        torch.save(ckpt, path)

    loaded_config, loaded, meta = load_checkpoint(path)
    assert loaded_config == get_config("tiny", **{**_micro_fields(config), "patch_image_size": 384})
    _same(loaded, sd)
    assert meta["hyperparameters_from"] == "args" and meta["arch"] == "ofa_large" and meta["num_updates"] == 9
    assert any("layer_norms" in n for n in meta["notes"]) and any("in_proj" in n for n in meta["notes"])


def _micro_fields(config):
    names = ("encoder_layers", "decoder_layers", "vocab_size", "num_bins", "code_dict_size", "image_bucket_size",
             "token_bucket_size", "max_source_positions", "max_target_positions", "disable_entangle")
    return {n: getattr(config, n) for n in names}


def test_cfg_as_omegaconf_with_namespace_model(micro, tmp_path, fake_omegaconf):
    # fairseq >= 0.10 with a legacy (add_args) model stores cfg.model as a Namespace inside the config
    config, sd = micro
    path = tmp_path / "omega_cfg.pt"
    with fake_omegaconf() as fk:
        model_ns = argparse.Namespace(**{k: v for k, v in model_hyperparameters(config).items()})
        cfg = fk.DictConfig({"common": {"log_format": fk.LogFormat.json}, "task": task_hyperparameters(config)})
        cfg._content["model"] = model_ns
        torch.save({"args": None, "cfg": cfg, "model": with_computed_buffers(config, sd)}, path)
    loaded_config, loaded, meta = load_checkpoint(path)
    assert loaded_config == config and meta["hyperparameters_from"] == "cfg"
    _same(loaded, sd)


def test_bare_state_dict_infers_the_architecture(tmp_path):
    config = get_config(
        "tiny", encoder_layers=2, decoder_layers=1, encoder_attention_heads=8, decoder_attention_heads=8,
        encoder_ffn_embed_dim=512, decoder_ffn_embed_dim=768, vocab_size=900, token_bucket_size=64,
        image_bucket_size=10, max_source_positions=100, max_target_positions=80, code_image_size=64,
        scale_fc=False, resnet_type="resnet101",
    )
    sd = recipe_state_dict(config)
    path = tmp_path / "bare.pt"
    torch.save(with_computed_buffers(config, sd), path)
    loaded_config, loaded, meta = load_checkpoint(path)
    assert loaded_config == config
    _same(loaded, sd)
    assert meta["hyperparameters_from"] == "none"


def test_half_precision_is_cast_to_float32(micro):
    config, sd = micro
    ckpt = build_official(config, sd)
    ckpt["model"] = collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items())
    _, loaded, meta = from_official(ckpt)
    assert all(v.dtype == (torch.long if "num_batches" in k else torch.float32) for k, v in loaded.items())
    assert torch.equal(loaded["encoder.layer_norm.weight"], sd["encoder.layer_norm.weight"].half().float())
    assert any("float16" in n for n in meta["notes"])


def test_classification_heads_are_dropped_with_a_note(micro):
    config, sd = micro
    ckpt = build_official(config, sd)
    ckpt["model"]["classification_heads.snli.dense.weight"] = torch.zeros(4, 256)
    ckpt["model"]["classification_heads.snli.out_proj.weight"] = torch.zeros(3, 4)
    _, loaded, meta = from_official(ckpt)
    assert not any(k.startswith("classification_heads") for k in loaded)
    assert any("snli" in n for n in meta["notes"])


def test_chinese_checkpoint_sets_language(micro):
    config, sd = micro
    zh = get_config("tiny", **_micro_fields(config), language="zh")
    ckpt = build_official(zh, sd)
    assert ckpt["cfg"]["task"]["bpe"] == "bert"
    assert from_official(ckpt)[0].language == "zh"
    ckpt["cfg"]["task"] = {"bpe_dir": "../../utils/BERT_CN_dict", "bpe": None}
    assert from_official(ckpt)[0].language == "zh"


def _expect(ckpt, *fragments, ema=False):
    with pytest.raises(OFAError) as err:
        from_official(ckpt, ema=ema, source="ckpt.pt")
    msg = str(err.value)
    assert msg.startswith("ckpt.pt") and "\n" not in msg
    for f in fragments:
        assert f in msg, msg


def test_mismatches_are_errors(micro):
    config, sd = micro

    ckpt = build_official(config, sd)
    del ckpt["model"]["encoder.layers.0.fc1.bias"], ckpt["model"]["decoder.layers.1.attn_ln.weight" if False else "decoder.layers.1.self_attn_ln.weight"]
    _expect(ckpt, "missing", "encoder.layers.0.fc1.bias", "decoder.layers.1.self_attn_ln.weight")

    ckpt = build_official(config, sd)
    ckpt["model"]["encoder.adapter.weight"] = torch.zeros(2)
    _expect(ckpt, "unexpected", "encoder.adapter.weight")

    ckpt = build_official(config, sd)
    ckpt["model"]["decoder.layers.0.fc2.weight"] = torch.zeros(256, 7)
    _expect(ckpt, "wrong shapes", "decoder.layers.0.fc2.weight")

    ckpt = build_official(config, sd)
    ckpt["cfg"]["model"]["encoder_layers"] = 3  # the stored config disagrees with the tensors
    _expect(ckpt, "missing", "encoder.layers.1.")

    ckpt = build_official(config, sd)
    ckpt["model"]["decoder.output_projection.weight"] = ckpt["model"]["decoder.output_projection.weight"] + 1
    _expect(ckpt, "decoder.output_projection.weight", "tie")

    ckpt = build_official(config, sd)
    ckpt["model"]["encoder.token_rp_bucket"] = ckpt["model"]["encoder.token_rp_bucket"].flip(0)
    _expect(ckpt, "encoder.token_rp_bucket")

    ckpt = build_official(config, sd)
    ckpt["cfg"]["model"]["encoder_prompt"] = True  # prefix tuning said, its weights not there
    _expect(ckpt, "missing", "encoder.encoder_prompt_encoder.embedding.weight")

    ckpt = build_official(config, sd)
    ckpt["cfg"]["model"].update(encoder_prompt=True, encoder_prompt_type="prompt")
    _expect(ckpt, "encoder_prompt_type 'prompt' is not supported")

    ckpt = build_official(config, sd)
    ckpt["cfg"]["model"]["resnet_type"] = "ViT-B/16"
    _expect(ckpt, "resnet_type")

    _expect(build_official(config, sd), "EMA", ema=True)
    _expect({"epoch": 3, "weights": [1, 2]}, "not an OFA checkpoint")
    _expect([1, 2, 3], "expected a checkpoint dict")


def test_missing_tied_keys_are_filled(micro):
    config, sd = micro
    ckpt = build_official(config, sd)
    del ckpt["model"]["decoder.output_projection.weight"], ckpt["model"]["decoder.embed_tokens.weight"]
    del ckpt["model"]["decoder.image_position_idx"], ckpt["model"]["encoder.version"]  # recomputed anyway
    _, loaded, _ = from_official(ckpt)
    _same(loaded, sd)
    assert loaded["decoder.output_projection.weight"] is loaded["encoder.embed_tokens.weight"]
