"""π-Tuning: experts' adapters mixed per layer by softmax weights (in parameter space, which is
what mixing the experts' projections gives), experts read from adapter folders, models and the
π-Tuning code's layout, and task similarity from Fisher embeddings."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from support import GOLDEN, recipe_model
from openofa.errors import OFAError
from openofa.petl import apply, trainable_names
from openofa.petl.files import load_adapter, save_adapter
from openofa.petl.pi import fisher_embedding, from_pi_tuning_layout, rank_experts, task_similarity


def _batch():
    z = np.load(GOLDEN / "forward_ofa_tiny.npz")
    return [torch.from_numpy(z[k]) for k in ("src_tokens", "src_lengths", "patch_images", "patch_masks",
                                             "prev_output_tokens")]


def _expert(tmp_path, seed: int):
    """An adapter 'trained' on some task: random weights, saved as an adapter folder."""
    model = copy.deepcopy(recipe_model("tiny"))
    apply(model, {"method": "adapter", "dim": 16})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapter." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    folder = save_adapter(model, {"method": "adapter", "dim": 16}, tmp_path / f"expert{seed}")
    return model.eval(), folder


@torch.no_grad()
def test_equal_weights_give_the_average_adapter(tmp_path):
    (m1, f1), (m2, f2) = _expert(tmp_path, 1), _expert(tmp_path, 2)
    mixed = copy.deepcopy(recipe_model("tiny"))
    added = apply(mixed, {"method": "pi", "experts": [str(f1), str(f2)]})
    assert mixed.config.adapter_experts == 2 and len([n for n in added if n.endswith("interpolation_weight")]) == 8
    average = copy.deepcopy(m1)
    for (n, p), q in zip(average.named_parameters(), m2.parameters()):
        if ".adapter." in n:
            p.copy_((p + q) / 2)
    batch = _batch()
    valid = batch[-1].ne(1)
    want = average(*batch)
    assert (mixed.eval()(*batch) - want)[valid].abs().max().item() < 1e-5
    # a weight vector far to one side is that expert alone
    one = copy.deepcopy(recipe_model("tiny"))
    apply(one, {"method": "pi", "experts": [str(f1), str(f2)], "init": [30.0, -30.0]})
    assert (one.eval()(*batch) - m1(*batch))[valid].abs().max().item() < 1e-5


def test_what_trains_and_saving(tmp_path):
    (_, f1), (_, f2) = _expert(tmp_path, 1), _expert(tmp_path, 2)
    spec = {"method": "pi", "experts": [str(f1), str(f2)], "init": [0.3, -0.2]}
    model = copy.deepcopy(recipe_model("tiny"))
    apply(model, spec)
    names = trainable_names(model, spec)
    assert all(".adapter.experts." in n or n.endswith(".adapter.interpolation_weight") for n in names)
    assert sum(n.endswith("interpolation_weight") for n in names) == 8
    only_weights = trainable_names(model, {**spec, "train_experts": False})
    assert only_weights and all(n.endswith("interpolation_weight") for n in only_weights)
    assert all(".experts." in n for n in trainable_names(model, {**spec, "learnable": False}))
    # the saved adapter holds the mixed experts: it loads without the expert files
    folder = save_adapter(model, spec, tmp_path / "pi")
    for f in (f1, f2):
        (f / "adapter_model.safetensors").unlink()
    fresh = copy.deepcopy(recipe_model("tiny"))
    load_adapter(fresh, folder)
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(*batch), model.eval()(*batch), atol=1e-6, rtol=0)


def test_expert_errors(tmp_path):
    (_, f1), _ = _expert(tmp_path, 1), None
    with pytest.raises(OFAError, match="at least two"):
        apply(copy.deepcopy(recipe_model("tiny")), {"method": "pi", "experts": [str(f1)]})
    lora = copy.deepcopy(recipe_model("tiny"))
    apply(lora, {"method": "lora"})
    folder = save_adapter(lora, {"method": "lora"}, tmp_path / "lora")
    with pytest.raises(OFAError, match="mixes adapters"):
        apply(copy.deepcopy(recipe_model("tiny")), {"method": "pi", "experts": [str(f1), str(folder)]})


def test_pi_tuning_code_layout_is_mapped():
    sd = {"encoder.layers.0.adapters2.1.down_proj.weight": torch.zeros(4, 3),
          "encoder.layers.0.adapters1.0.up_proj.bias": torch.zeros(3),
          "decoder.layers.3.adapter_interpolation_weight2": torch.ones(2),
          "decoder.layers.3.adapter_interpolation_weight1": torch.ones(2),
          "encoder.layers.0.fc1.weight": torch.zeros(1)}
    out, fields = from_pi_tuning_layout(sd)
    assert set(out) == {"encoder.layers.0.adapter.experts.1.down_proj.weight",
                        "encoder.layers.0.attn_adapter.experts.0.up_proj.bias",
                        "decoder.layers.3.adapter.interpolation_weight",
                        "decoder.layers.3.attn_adapter.interpolation_weight", "encoder.layers.0.fc1.weight"}
    assert fields == {"adapter": True, "attn_adapter": True, "adapter_experts": 2, "adapter_dim": 4}
    single, fields = from_pi_tuning_layout({"decoder.layers.1.adapter1.down_proj.weight": torch.zeros(8, 3)})
    assert set(single) == {"decoder.layers.1.attn_adapter.down_proj.weight"}
    assert fields == {"adapter": True, "attn_adapter": True, "adapter_experts": 0, "adapter_dim": 8}
    assert from_pi_tuning_layout({"encoder.layers.0.adapter.down_proj.weight": torch.zeros(1)})[1] == {}


@torch.no_grad()
def test_a_file_written_by_the_pi_tuning_code_loads(tmp_path):
    """Experts with adapters after the self-attention and the FFN, interpolated: renamed to the
    π-Tuning code's keys inside an official file, the file loads as the same model."""
    from openofa.checkpoints import load_checkpoint
    from openofa.checkpoints.official import build_official
    from openofa.model import model_from_state_dict

    experts = []
    for seed in (1, 2):
        m = copy.deepcopy(recipe_model("tiny"))
        apply(m, {"method": "adapter", "dim": 8, "attention": True})
        g = torch.Generator().manual_seed(seed)
        for name, p in m.named_parameters():
            if "adapter." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        experts.append(save_adapter(m, {"method": "adapter", "dim": 8, "attention": True}, tmp_path / f"e{seed}"))
    mixed = copy.deepcopy(recipe_model("tiny"))
    apply(mixed, {"method": "pi", "experts": [str(e) for e in experts], "init": [0.5, -0.5]})
    assert mixed.config.attn_adapter and mixed.config.adapter_experts == 2
    base = recipe_model("tiny")
    ckpt = build_official(base.config, base.state_dict())
    fork = {}
    for key, value in mixed.state_dict().items():
        key = key.replace(".attn_adapter.experts.", ".adapters1.").replace(".adapter.experts.", ".adapters2.")
        key = key.replace(".attn_adapter.interpolation_weight", ".adapter_interpolation_weight1")
        key = key.replace(".adapter.interpolation_weight", ".adapter_interpolation_weight2")
        fork[key] = value
    assert any(".adapters1.1." in k for k in fork) and any(k.endswith("weight2") for k in fork)
    ckpt["model"] = {**ckpt["model"], **fork}
    torch.save(ckpt, tmp_path / "pi.pt")
    config, sd, meta = load_checkpoint(tmp_path / "pi.pt")
    assert config.adapter_experts == 2 and config.attn_adapter and config.adapter_dim == 8
    loaded = model_from_state_dict(config, sd).eval()
    batch = _batch()
    torch.testing.assert_close(loaded(*batch), mixed.eval()(*batch), atol=1e-5, rtol=0)


def test_task_similarity_ranks_the_expert_of_the_same_data_first():
    model = copy.deepcopy(recipe_model("tiny"))
    apply(model, {"method": "adapter", "dim": 8})
    names = trainable_names(model, {"method": "adapter"})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    src = torch.from_numpy(np.load(GOLDEN / "forward_ofa_tiny.npz")["src_tokens"])  # text only: quicker
    g = torch.Generator().manual_seed(0)

    def batches(targets):
        return [targets[i] for i in range(len(targets))]

    def loss(m, tgt):
        prev = torch.cat([torch.zeros(2, 1, dtype=torch.long), tgt[:, :-1]], 1)
        return torch.nn.functional.cross_entropy(m(src, None, None, None, prev).flatten(0, 1), tgt.flatten())

    task_a = torch.randint(4, 50, (3, 2, 5), generator=g)  # two "tasks": different target vocabularies
    task_b = torch.randint(40000, 50000, (3, 2, 5), generator=g)
    emb_a = fisher_embedding(model.train(), batches(task_a), loss, names)
    emb_a2 = fisher_embedding(model, batches(task_a[[2, 0, 1]]), loss, names)
    emb_b = fisher_embedding(model, batches(task_b), loss, names)
    assert set(emb_a) == set(names)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # nothing updated
    assert task_similarity(emb_a, emb_a) == pytest.approx(1.0, abs=1e-9)
    ranked = rank_experts(emb_a2, {"b": emb_b, "a": emb_a})
    assert [n for n, _ in ranked] == ["a", "b"] and ranked[0][1] > ranked[1][1]
    assert rank_experts(emb_a2, {"b": emb_b, "a": emb_a}, top_k=1) == ranked[:1]
