"""Training with a ``petl`` section: only the method's weights change (every other weight and
buffer stays bit-identical), the exports hold only those weights in an adapter folder that loads
back onto the base model, and ``export_merged`` writes the whole model with the same outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_support import MICRO  # noqa: E402

from openofa.errors import OFAError  # noqa: E402

METHODS = {
    "lora": {"method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "fc1"]},
    "adapter": {"method": "adapter", "dim": 16},
    "prefix": {"method": "prefix", "length": 5},
    "bitfit": {"method": "bitfit"},
}


def _base(tmp_path: Path) -> Path:
    from openofa.model import build_model
    from openofa.config import get_config
    from openofa.train.checkpoint import export_weights

    torch.manual_seed(0)
    model = build_model(get_config("tiny", **MICRO))
    return export_weights(tmp_path / "base", model.config, model.state_dict())


def _recipe(tmp_path: Path, petl, **extra) -> dict:
    return {"task": "synthetic", "model": "tiny", "model_config": MICRO, "init_from": str(_base(tmp_path)),
            "max_update": 3, "batch_size": 2, "lr": 5e-2, "warmup_ratio": 0.0, "run_dir": str(tmp_path / "run"),
            "progress": False, "validate_every_epochs": 0, "tensorboard": False, "petl": petl,
            "data": {"num_examples": 8, "src_len": 8, "tgt_len": 5, "image_size": 32}, **extra}


@pytest.mark.parametrize("name", list(METHODS))
def test_only_the_methods_weights_train(tmp_path, name):
    from openofa.checkpoints import load_checkpoint
    from openofa.petl.files import read_adapter
    from openofa.train.recipe import config_from_mapping
    from openofa.train.run import run

    cfg = config_from_mapping(_recipe(tmp_path, METHODS[name], export_merged=True))
    seen = {}

    def capture(trainer):
        seen["state"] = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
        seen["trainable"] = [n for n, p in trainer.module.named_parameters() if p.requires_grad]

    run(cfg, hooks=[capture])
    _, base, _ = load_checkpoint(tmp_path / "base")
    after, trainable = seen["state"], set(seen["trainable"])
    assert trainable
    for key, value in base.items():
        if key in trainable:
            continue
        assert torch.equal(after[key], value), f"{key} changed"
    changed = [k for k in trainable if k in base and not torch.equal(after[k], base[k])]
    new = [k for k in trainable if k not in base]
    if name == "bitfit":
        assert not new and len(changed) == len(trainable)
    else:
        assert set(new) == trainable and not changed

    final = tmp_path / "run" / "final"
    assert sorted(p.name for p in final.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    specs, tensors, meta = read_adapter(final)
    assert set(tensors) == trainable and specs[0]["method"] == name
    for key, t in tensors.items():
        assert torch.equal(t, after[key])
    assert (tmp_path / "run" / "final_merged" / "model.safetensors").is_file()


def test_adapter_export_runs_like_the_merged_model(tmp_path):
    """The base model with the exported LoRA adapter (merged or not) equals ``final_merged``."""
    from openofa.checkpoints import load_checkpoint
    from openofa.model import model_from_state_dict
    from openofa.petl import merge_lora
    from openofa.petl.files import load_adapter
    from openofa.train.recipe import config_from_mapping
    from openofa.train.run import run

    run(config_from_mapping(_recipe(tmp_path, METHODS["lora"], export_merged=True)))
    merged = model_from_state_dict(*load_checkpoint(tmp_path / "run" / "final_merged")[:2]).eval()
    base = model_from_state_dict(*load_checkpoint(tmp_path / "base")[:2]).eval()
    load_adapter(base, tmp_path / "run" / "final")
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 500, (2, 8), generator=g)
    img = torch.randn(2, 3, 32, 32, generator=g)
    prev = torch.randint(4, 500, (2, 5), generator=g)
    with torch.no_grad():
        want = merged(src, None, img, torch.tensor([True, True]), prev)
        unmerged = base(src, None, img, torch.tensor([True, True]), prev)
        merge_lora(base)
        got = base(src, None, img, torch.tensor([True, True]), prev)
    assert (unmerged - want).abs().max().item() < 1e-5
    assert (got - want).abs().max().item() < 1e-5


def test_petl_recipe_errors(tmp_path):
    from openofa.train.recipe import config_from_mapping

    base = {"task": "synthetic", "model": "tiny", "max_update": 1}
    with pytest.raises(OFAError, match="petl: unknown method 'lorra'"):
        config_from_mapping({**base, "petl": {"method": "lorra"}})
    with pytest.raises(OFAError, match="petl: method adapter has no option size"):
        config_from_mapping({**base, "petl": {"method": "adapter", "size": 3}})
    with pytest.raises(OFAError, match="export_merged: applies to petl runs"):
        config_from_mapping({**base, "export_merged": True})
    both = config_from_mapping({**base, "petl": [{"method": "adapter"}, {"method": "prefix", "decoder": False}]})
    assert [m["method"] for m in both.petl] == ["adapter", "prefix"]


def test_an_adapter_folder_given_as_a_model_says_what_to_do(tmp_path):
    from openofa.checkpoints import load_checkpoint
    from openofa.train.recipe import config_from_mapping
    from openofa.train.run import run

    run(config_from_mapping(_recipe(tmp_path, METHODS["bitfit"])))
    with pytest.raises(OFAError, match="an adapter folder .* --adapter"):
        load_checkpoint(tmp_path / "run" / "final")
    assert json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())["peft_type"] == "OPENOFA"
