"""LoRA: starts from the base model exactly, merges into the base weights without changing the
outputs, and is saved in the ``peft`` library's layout (``peft`` loads it and agrees)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from support import GOLDEN, recipe_model
from openofa.errors import OFAError
from openofa.petl import apply, freeze_except, merge_lora, trainable_names
from openofa.petl.files import load_adapter, read_adapter, save_adapter

SPEC = {"method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "fc1"]}


def _batch():
    z = np.load(GOLDEN / "forward_ofa_tiny.npz")
    return [torch.from_numpy(z[k]) for k in ("src_tokens", "src_lengths", "patch_images", "patch_masks",
                                             "prev_output_tokens")]


def _with_trained_lora(spec=SPEC, seed=0):
    model = copy.deepcopy(recipe_model("tiny"))
    apply(model, spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # as if trained: B is no longer zero
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@torch.no_grad()
def test_fresh_lora_leaves_the_model_unchanged_and_trains_only_its_weights():
    base = recipe_model("tiny")
    model = copy.deepcopy(base)
    added = apply(model, SPEC)
    assert len(added) == 2 * (4 * 3 + 4 * 5)  # A and B; encoder q, v, fc1; decoder self and cross q, v, fc1
    batch = _batch()
    torch.testing.assert_close(model(*batch), base(*batch), atol=0, rtol=0)
    names = trainable_names(model, SPEC)
    assert sorted(names) == sorted(added)
    n = freeze_except(model, names)
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert {k for k in model.state_dict() if "lora" not in k} == set(base.state_dict())


@torch.no_grad()
def test_merged_model_equals_unmerged_and_is_plain():
    model = _with_trained_lora()
    batch = _batch()
    valid = batch[-1].ne(1)
    before = model(*batch)
    assert (before - recipe_model("tiny")(*batch))[valid].abs().max() > 1e-3  # the update does something
    assert merge_lora(model) == 4 * 3 + 4 * 5
    after = model(*batch)
    assert (after - before)[valid].abs().max().item() < 1e-5 * max(1.0, before.abs().max().item())
    assert set(model.state_dict()) == set(recipe_model("tiny").state_dict())


@torch.no_grad()
def test_saved_adapter_holds_only_lora_weights_and_loads_back(tmp_path):
    model = _with_trained_lora()
    folder = save_adapter(model, SPEC, tmp_path / "lora", base_model="tiny-recipe", tasks=["caption"])
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    specs, tensors, meta = read_adapter(folder)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors) and len(tensors) == 64
    assert meta["tasks"] == ["caption"] and specs[0]["r"] == 4
    fresh = copy.deepcopy(recipe_model("tiny"))
    load_adapter(fresh, folder)
    batch = _batch()
    torch.testing.assert_close(fresh(*batch), model(*batch), atol=1e-6, rtol=0)


@torch.no_grad()
def test_peft_reads_our_adapter(tmp_path):
    from peft import PeftModel

    model = _with_trained_lora()
    folder = save_adapter(model, SPEC, tmp_path / "lora")
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
        assert all(k.startswith("base_model.model.") for k in f.keys())
    wrapped = PeftModel.from_pretrained(copy.deepcopy(recipe_model("tiny")), str(folder))
    batch = _batch()
    valid = batch[-1].ne(1)
    ours, theirs = model(*batch), wrapped.base_model.model(*batch)
    assert (ours - theirs)[valid].abs().max().item() < 1e-5
    # and what peft saves, we read
    wrapped.save_pretrained(str(tmp_path / "from_peft"))
    fresh = copy.deepcopy(recipe_model("tiny"))
    load_adapter(fresh, tmp_path / "from_peft")
    assert (fresh(*batch) - ours)[valid].abs().max().item() < 1e-5


def test_adapter_for_another_model_shape_is_refused(tmp_path):
    from openofa.config import get_config
    from openofa.model import build_model

    folder = save_adapter(_with_trained_lora(), SPEC, tmp_path / "lora")
    other = build_model(get_config("tiny", encoder_embed_dim=128, decoder_embed_dim=128, encoder_ffn_embed_dim=512,
                                   decoder_ffn_embed_dim=512))
    with pytest.raises(OFAError, match="another model shape: encoder_embed_dim 256 \\(this model: 128\\)"):
        load_adapter(other, folder)
    assert not any("lora" in k for k in other.state_dict())  # refused before the model changed


def test_lora_target_errors():
    model = copy.deepcopy(recipe_model("tiny"))
    with pytest.raises(OFAError, match="selects no linear layer"):
        apply(model, {"method": "lora", "target_modules": ["nothing_here"]})
    with pytest.raises(OFAError, match="shares its weight with the token embedding"):
        apply(model, {"method": "lora", "target_modules": ["output_projection"]})
    with pytest.raises(OFAError, match="has no option rank"):
        apply(model, {"method": "lora", "rank": 4})
    with pytest.raises(OFAError, match="unknown method"):
        apply(model, {"method": "lorra"})
    added = apply(model, {"method": "lora", "target_modules": r"decoder\.layers\.[01]\.fc2"})
    assert added == [f"decoder.layers.{i}.fc2.lora_{x}.weight" for i in (0, 1) for x in "AB"]
