"""The grounding attention loss: the model's cross-attention on request, the box's cells, the loss
and its gradient, mixtures (rows without a box), and a training run that raises the attention on
the box."""

from __future__ import annotations

import math

import pytest
import torch

from openofa.config import get_config
from openofa.errors import OFAError
from openofa.mini.box_attention import BoxAttentionLoss, box_cells
from openofa.mini.scenes import write_dataset
from openofa.model import build_model
from openofa.train.datasets import build_datasets
from openofa.train.loss import LabelSmoothedCrossEntropy
from openofa.train.recipe import TrainConfig
from openofa.train.trainer import Trainer
from train_support import micro_model


def test_cells_of_a_box():
    boxes = torch.tensor([[0.0, 0.0, 32.0, 16.0],    # top-left 2x1 cells of a 4x4 grid on 64 px
                          [40.0, 40.0, 44.0, 44.0],  # smaller than a cell: the cell of its centre
                          [0.0, 0.0, 64.0, 64.0]])
    cells = box_cells(boxes, (4, 4), (64, 64)).view(3, 4, 4)
    assert cells[0].nonzero().tolist() == [[0, 0], [0, 1]]
    assert cells[1].nonzero().tolist() == [[2, 2]]
    assert bool(cells[2].all())
    wide = box_cells(torch.tensor([[0.0, 0.0, 64.0, 10.0]]), (2, 4), (32, 64)).view(2, 4)
    assert wide.nonzero().tolist() == [[0, 0], [0, 1], [0, 2], [0, 3]]  # cells 16 px wide, 16 px high
    centre = box_cells(boxes, (4, 4), (64, 64), centre_only=True).view(3, 4, 4)
    assert [c.nonzero().tolist() for c in centre] == [[[0, 1]], [[2, 2]], [[2, 2]]]  # centres (16, 8), (42, 42), (32, 32)


def batch_of_model_inputs(batch_size=3, image=32, src=6, tgt=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(src_tokens=torch.randint(4, 500, (batch_size, src), generator=g),
                patch_images=torch.randn(batch_size, 3, image, image, generator=g),
                patch_masks=torch.ones(batch_size, dtype=torch.bool),
                prev_output_tokens=torch.randint(4, 500, (batch_size, tgt), generator=g))


def test_the_model_returns_one_layers_cross_attention_without_changing_the_logits():
    model = micro_model(decoder_layers=2).eval()
    inputs = batch_of_model_inputs()
    with torch.no_grad():
        plain = model(**inputs)
        for layer in (-1, 0, 1):
            logits, attention = model(**inputs, cross_attention_layer=layer)
            torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
            w = attention.weights
            assert attention.image_grid == (2, 2)  # 32 px images, 16 px patches
            assert w.shape == (3, 2, 5, 4 + 6) and w.dtype == torch.float32
            torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 5))
        first = model(**inputs, cross_attention_layer=0)[1].weights
        assert not torch.allclose(first, w)  # layers differ
        with pytest.raises(IndexError, match="2 layers"):
            model(**inputs, cross_attention_layer=2)


def test_text_only_inputs_have_no_image_grid():
    model = micro_model().eval()
    inputs = batch_of_model_inputs()
    inputs.pop("patch_images"), inputs.pop("patch_masks")
    with torch.no_grad():
        _, attention = model(**inputs, cross_attention_layer=-1)
    assert attention.image_grid is None and attention.weights.shape[-1] == 6


def loss_inputs(weight=5.0):
    model = micro_model().train()
    inputs = batch_of_model_inputs()
    target = inputs["prev_output_tokens"].clone()
    target[1, :2] = 1  # a prompt-prefixed row: its first box token is emitted at step 2
    batch = {"net_input": inputs, "target": target,
             "attend_boxes": torch.tensor([[0.0, 0.0, 15.0, 15.0], [float("nan")] * 4, [17.0, 17.0, 32.0, 32.0]])}
    ce = LabelSmoothedCrossEntropy(0.1)
    return model, batch, ce, BoxAttentionLoss(ce, weight)


def test_the_loss_is_the_cross_entropy_plus_the_attention_mass_of_boxed_rows():
    model, batch, ce, crit = loss_inputs(weight=5.0)
    batch["target"][2, :2] = 1
    logits, attention = model(**batch["net_input"], cross_attention_layer=-1)
    out = crit((logits, attention), batch)
    plain = ce(logits, batch)
    w = attention.weights.detach()
    # row 0 looks at step 0, cell 0 (top-left of the 2x2 grid); row 2 at step 2, cell 3; row 1 has no box
    mass0 = w[0, :, 0, 0].mean()
    mass2 = w[2, :, 2, 3].mean()
    expected = plain.loss.detach() - 5.0 * (math.log(mass0) + math.log(mass2))
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert out.sample_size == plain.sample_size and float(out.nll_loss) == pytest.approx(float(plain.nll_loss))
    assert out.sums == {"box_mass": pytest.approx(float(mass0 + mass2)), "boxed": 2.0}


def test_the_centre_option_counts_only_the_cell_of_the_box_centre():
    model, batch, ce, _ = loss_inputs()
    batch["attend_boxes"] = torch.tensor([[0.0, 0.0, 32.0, 32.0]] + [[float("nan")] * 4] * 2)  # the whole image
    logits, attention = model(**batch["net_input"], cross_attention_layer=-1)
    plain = ce(logits, batch).loss.detach()
    whole = BoxAttentionLoss(ce, 5.0)((logits, attention), batch)
    centre = BoxAttentionLoss(ce, 5.0, cells="centre")((logits, attention), batch)
    w = attention.weights.detach()[0, :, 0]
    image_mass, mass = w[:, :4].sum(-1).mean(), w[:, 3].mean()  # centre (16, 16): the bottom-right cell of 2x2
    assert float(whole.loss.detach()) == pytest.approx(float(plain - 5.0 * math.log(image_mass)), rel=1e-5)
    assert float(centre.loss.detach()) == pytest.approx(float(plain - 5.0 * math.log(mass)), rel=1e-5)
    assert float(centre.loss.detach()) > float(whole.loss.detach())
    with pytest.raises(OFAError, match="box_attention_cells"):
        BoxAttentionLoss(ce, 5.0, cells="corner")


def test_later_location_steps_can_be_supervised_too():
    model, batch, ce, _ = loss_inputs()
    crit = BoxAttentionLoss(ce, 2.0, steps=3)
    with torch.no_grad():
        logits, attention = model(**batch["net_input"], cross_attention_layer=-1)
    out = crit((logits, attention), batch)
    w = attention.weights
    row0 = sum(math.log(w[0, :, t, 0].mean()) for t in range(3)) / 3   # steps 0-2, cell 0
    row2 = sum(math.log(w[2, :, t, 3].mean()) for t in range(3)) / 3   # steps 0-2, cell 3
    assert float(out.loss) == pytest.approx(float(ce(logits, batch).loss) - 2.0 * (row0 + row2), rel=1e-5)
    assert out.sums["box_mass"] == pytest.approx(float(w[0, :, 0, 0].mean() + w[2, :, 0, 3].mean()))
    with pytest.raises(OFAError, match="1 to 4"):
        BoxAttentionLoss(ce, 1.0, steps=5)


def test_a_short_target_counts_only_its_own_tokens():
    model, batch, ce, _ = loss_inputs()
    batch["target"][0] = torch.tensor([1, 1, 50, 2, 1])  # a one-word answer after a 2-token prompt
    crit = BoxAttentionLoss(ce, 1.0, steps=4)
    with torch.no_grad():
        logits, attention = model(**batch["net_input"], cross_attention_layer=-1)
    out = crit((logits, attention), batch)
    w = attention.weights
    row0 = math.log(w[0, :, 2, 0].mean())                                # step 2 only
    row2 = sum(math.log(w[2, :, t, 3].mean()) for t in range(4)) / 4     # steps 0-3
    assert float(out.loss) == pytest.approx(float(ce(logits, batch).loss) - (row0 + row2), rel=1e-5)


def test_the_gradient_moves_the_attention_onto_the_box():
    model, batch, ce, crit = loss_inputs(weight=50.0)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)

    def mass():
        with torch.no_grad():
            logits, attention = model.eval()(**batch["net_input"], cross_attention_layer=-1)
        model.train()
        return crit((logits, attention), batch).sums["box_mass"]

    before = mass()
    for _ in range(10):
        out = crit(model(**batch["net_input"], cross_attention_layer=-1), batch)
        opt.zero_grad()
        (out.loss / out.sample_size).backward()
        opt.step()
    assert mass() > before + 0.2


def test_batches_without_boxes_and_plain_logits():
    model, batch, ce, crit = loss_inputs()
    out = model(**batch["net_input"], cross_attention_layer=-1)
    no_boxes = {k: v for k, v in batch.items() if k != "attend_boxes"}
    assert float(crit(out, no_boxes).loss.detach()) == pytest.approx(float(ce(out[0], batch).loss.detach()))
    nan_boxes = dict(batch, attend_boxes=torch.full((3, 4), float("nan")))
    assert crit(out, nan_boxes).sums == {}
    with pytest.raises(OFAError, match="cross_attention_layer"):
        crit(out[0], batch)
    with pytest.raises(OFAError, match="must be > 0"):
        BoxAttentionLoss(ce, 0.0)


def scenes_config(tmp_path, **overrides):
    files = write_dataset(tmp_path / "data", n=6, seed=2001)
    base = dict(task="mixture", model="mini", mixture={t: str(files[t]) for t in ("caption", "vqa", "ground")},
                data={"patch_image_size": 64, "max_src_length": 40, "max_tgt_length": 40,
                      "ground": {"max_image_size": 64, "prompt_type": "prev_output"}},
                batch_size=8, max_update=12, lr=2e-3, warmup_ratio=0.1, log_every=4, progress=False,
                tensorboard=False, validate_every_epochs=0, save_every_epochs=0, best_metric="loss",
                run_dir=str(tmp_path / "run"), model_config={"encoder_layers": 1, "decoder_layers": 1},
                seed=3)
    base.update(overrides)
    return TrainConfig(**base).validate("test")


def test_mixture_batches_carry_boxes_of_grounding_and_vqa_rows(tmp_path):
    cfg = scenes_config(tmp_path)
    train, _ = build_datasets(cfg, get_config("mini"))
    batch = train.collater([train[i] for i in range(len(train))])
    has_box = ~torch.isnan(batch["attend_boxes"]).any(1)
    task = [w.split("/")[-1].split(".")[0] for w in batch["where"]]
    assert all(has_box[i] for i, t in enumerate(task) if t == "ground")
    assert not any(has_box[i] for i, t in enumerate(task) if t == "caption")
    vqa = [bool(has_box[i]) for i, t in enumerate(task) if t == "vqa"]
    assert any(vqa) and not all(vqa)  # questions about one object, and counts
    real = batch["attend_boxes"][has_box]
    assert bool(((real[:, :2] >= 0) & (real[:, 2:] <= 64) & (real[:, 2:] > real[:, :2])).all())


def test_training_with_the_option_logs_and_raises_the_mass_on_the_box(tmp_path):
    cfg = scenes_config(tmp_path, box_attention_weight=5.0, max_update=24, task="ground", mixture={},
                        train_data=str(tmp_path / "data" / "ground.jsonl"),
                        data={"patch_image_size": 64, "max_src_length": 40, "max_tgt_length": 40,
                              "max_image_size": 64, "prompt_type": "prev_output"})
    train, _ = build_datasets(cfg, get_config("mini"))
    torch.manual_seed(0)
    model = build_model(get_config("mini", encoder_layers=1, decoder_layers=1))
    trainer = Trainer(cfg, model, train)
    assert isinstance(trainer.criterion, BoxAttentionLoss)
    masses = []
    trainer.hooks.append(lambda tr: masses.append(tr.last_stats["box_mass"]))
    trainer.fit()
    assert len(masses) == 24 and all(0.0 < m <= 1.0 for m in masses)
    assert sum(masses[-4:]) / 4 > sum(masses[:4]) / 4 + 0.05
    rows = trainer.log.train_csv._read()
    assert rows and all(0.0 < float(r["box_mass"]) <= 1.0 for r in rows) and "boxed" not in rows[0]


def test_recipe_checks():
    with pytest.raises(OFAError, match="box_attention_weight"):
        TrainConfig(task="caption", model="tiny", box_attention_weight=-1.0).validate("test")
    with pytest.raises(OFAError, match="box_attention_weight"):
        TrainConfig(task="caption", model="tiny", box_attention_weight=1.0, criterion="scst").validate("test")
    with pytest.raises(OFAError, match="box_attention_steps"):
        TrainConfig(task="caption", model="tiny", box_attention_weight=1.0, box_attention_steps=0).validate("test")
    with pytest.raises(OFAError, match="box_attention_cells: must be box or centre"):
        TrainConfig(task="caption", model="tiny", box_attention_weight=1.0, box_attention_cells="all").validate("test")
    with pytest.raises(OFAError, match="image_cache_mb: must be >= 0"):
        TrainConfig(task="caption", model="tiny", image_cache_mb=-1).validate("test")
