"""The training loop in one process: accumulation, precision, activation checkpointing, freezing,
validation with a user metric, best checkpoint, resume rules."""

from __future__ import annotations

import pytest
import torch

from openofa.errors import OFAError
from openofa.train.trainer import Trainer
from train_support import REGULARISED, datasets, micro_model, train_config


def fit(run_dir, *, model_kw=None, evaluate=None, n=12, hooks=(), image_size=32, **cfg):
    losses = []
    states = {}

    def record(tr):
        losses.append(tr.last_stats["loss"])
        states[tr.progress.num_updates] = {k: v.clone() for k, v in tr.module.state_dict().items()}

    cfg.setdefault("max_epoch", 1)
    trainer = Trainer(train_config(run_dir, **cfg), micro_model(**(model_kw or {})), datasets(n, image_size)[0],
                      valid_data=datasets(n, image_size)[1], evaluate=evaluate, hooks=[record, *hooks])
    summary = trainer.fit()
    return trainer, summary, losses, states


def test_accumulation_equals_a_bigger_batch(tmp_path):
    # BN statistics depend on the micro-batch, so they are frozen here (as are dropouts)
    _, _, big, s1 = fit(tmp_path / "a", batch_size=4, update_freq=1, freeze_bn=True)
    _, _, acc, s2 = fit(tmp_path / "b", batch_size=2, update_freq=2, freeze_bn=True)
    assert len(big) == len(acc) == 3
    assert acc == pytest.approx(big, abs=1e-5)
    for k, v in s1[3].items():
        assert torch.allclose(v.float(), s2[3][k].float(), atol=2e-3), k


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path):
    t1, _, plain, s1 = fit(tmp_path / "a", model_kw=REGULARISED)
    t2, _, ckpt, s2 = fit(tmp_path / "b", model_kw=REGULARISED, activation_checkpointing=True)
    assert "forward" in vars(t2.module.encoder.layers[0])  # wrapped on the instance ...
    assert t1.module.state_dict().keys() == t2.module.state_dict().keys()  # ... keys unchanged
    assert ckpt == pytest.approx(plain, abs=1e-6)  # dropout masks replayed exactly
    last = max(s1)
    for k, v in s1[last].items():
        assert torch.allclose(v, s2[last][k], atol=1e-6), k


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, precision):
    _, _, ref, _ = fit(tmp_path / "fp32", n=6, update_freq=1)
    trainer, _, losses, _ = fit(tmp_path / precision, n=6, update_freq=1, precision=precision)
    assert len(losses) == len(ref) == 2
    assert losses == pytest.approx(ref, rel=0.05)
    if precision == "fp16":
        assert trainer.scaler is not None and trainer.last_stats["loss_scale"] > 0
    for p in trainer.module.parameters():
        assert p.dtype == torch.float32  # autocast: weights and optimizer stay float32


def test_user_metric_keeps_the_best_weights(tmp_path):
    scores = iter([0.1, 0.7, 0.3])
    calls = []

    def evaluate(model):
        assert not model.training
        calls.append(1)
        return {"score": next(scores), "other": 1.0}

    trainer, summary, _, states = fit(tmp_path, n=18, evaluate=evaluate, validate_every_updates=1, validate_every_epochs=0,
                                      best_metric="score", maximize_best=True)
    assert len(calls) == 3 and summary["best"] == 0.7 and summary["best_update"] == 2
    assert trainer.module.training  # back in training mode after validation
    import openofa

    best = openofa.load(tmp_path / "best", fold_batchnorm=False).model.state_dict()
    for k, v in states[2].items():
        assert torch.equal(best[k], v), k
    rows = (tmp_path / "valid_log.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["epoch", "update", "score", "other"] and len(rows) == 4


def test_missing_metric_is_an_error(tmp_path):
    with pytest.raises(OFAError, match="best_metric 'cider'"):
        fit(tmp_path, evaluate=lambda m: {"bleu": 1.0}, best_metric="cider", validate_every_updates=1)


def test_freezing_keeps_weights_and_batchnorm_statistics(tmp_path):
    before = micro_model().state_dict()
    trainer, _, _, _ = fit(tmp_path, freeze_embedding=True, freeze_bn=True)
    after = trainer.module.state_dict()
    assert torch.equal(after["encoder.embed_tokens.weight"], before["encoder.embed_tokens.weight"])
    for k in ("encoder.embed_images.bn1.running_mean", "encoder.embed_images.bn1.weight",
              "encoder.embed_images.layer1.0.bn2.running_var"):
        assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["encoder.embed_images.conv1.weight"], before["encoder.embed_images.conv1.weight"])
    assert not torch.equal(after["decoder.layers.0.fc1.weight"], before["decoder.layers.0.fc1.weight"])


def test_resume_rules(tmp_path):
    fit(tmp_path, max_update=2, max_epoch=0)
    with pytest.raises(OFAError, match="already holds a run"):
        fit(tmp_path, max_update=2, max_epoch=0, resume="never")
    with pytest.raises(OFAError, match="no checkpoint to resume from"):
        fit(tmp_path / "other", resume="always")
    with pytest.raises(OFAError, match="examples per micro-batch"):
        fit(tmp_path, max_update=4, max_epoch=0, batch_size=2)
    # a finished run resumes to nothing; a longer one continues where it stopped
    _, summary, losses, _ = fit(tmp_path, max_update=2, max_epoch=0)
    assert summary["num_updates"] == 2 and losses == []
    _, summary, losses, _ = fit(tmp_path, max_update=3, max_epoch=0)
    assert summary["num_updates"] == 3 and len(losses) == 1


def test_text_only_batches_and_micro_batches_of_bad_rows(tmp_path):
    class WithBadRows(torch.utils.data.Dataset):
        def __init__(self):
            self.inner = datasets(8, image_size=0)[0]

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            return None if i in (2, 3) else self.inner[i]

        def collater(self, samples):
            good = [s for s in samples if s is not None]
            return self.inner.collater(good) if good else {}

    cfg = train_config(tmp_path, batch_size=2, update_freq=1, max_epoch=1, seeded_examples=False)
    trainer = Trainer(cfg, micro_model(), WithBadRows())
    summary = trainer.fit()
    assert summary["num_updates"] == 4


def test_command_line_starts_from_exported_weights(tmp_path, capsys):
    import json

    from openofa.checkpoints import save_pretrained
    from openofa.train.cli import main
    from train_support import MICRO

    start = micro_model(seed=3)
    save_pretrained(tmp_path / "w", start.config, start.state_dict())
    shape = {k: MICRO[k] for k in ("encoder_layers", "decoder_layers", "encoder_embed_dim", "decoder_embed_dim")}
    recipe = {"task": "synthetic", "model": "tiny", "init_from": str(tmp_path / "w"), "max_update": 1,
              "batch_size": 2, "data": {"num_examples": 4, "image_size": 0}, "validate_every_epochs": 0,
              "progress": False, "tensorboard": False, "model_config": {**shape, "dropout": 0.1}}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    assert main([str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "run")]) == 0
    import openofa

    final = openofa.load(tmp_path / "run" / "final").model
    assert final.config.dropout == 0.1 and final.config.encoder_layers == 1
    assert main([str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "run2"), "--set", "model=base"]) == 2
    assert "asks for" in capsys.readouterr().err


def test_finetuning_a_released_file_trains_the_model_it_describes(tmp_path):
    """A file written with the released flags (disable_entangle) and ImageNet normalisation: the
    trained model has no decoder input positions, and the exported model records both."""
    import dataclasses
    import json

    import openofa
    from openofa.checkpoints import save_official
    from train_support import MICRO

    start = micro_model(seed=4, disable_entangle=True)
    save_official(tmp_path / "released.pt", start.config, start.state_dict(),
                  task={"_name": "image_classify", "imagenet_default_mean_and_std": True, "patch_image_size": 64})
    shape = {k: MICRO[k] for k in ("encoder_layers", "decoder_layers", "encoder_embed_dim", "decoder_embed_dim")}
    recipe = {"task": "synthetic", "model": "tiny", "init_from": str(tmp_path / "released.pt"), "max_update": 1,
              "batch_size": 2, "data": {"num_examples": 4, "image_size": 0}, "validate_every_epochs": 0,
              "progress": False, "tensorboard": False, "model_config": shape}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    from openofa.train.cli import main
    from openofa.train.model import build_model_for
    from openofa.train.recipe import config_from_mapping

    model = build_model_for(config_from_mapping(recipe))
    assert model.config.disable_entangle is True
    tokens = torch.tensor([[0, 5, 6]])
    x = model.decoder._embed(tokens, torch.arange(3))
    torch.testing.assert_close(x, model.decoder.layernorm_embedding(model.decoder.embed_tokens(tokens)))
    assert main([str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "run")]) == 0
    final = openofa.load(tmp_path / "run" / "final")
    assert final.model.config.disable_entangle is True
    assert final.preprocess("classify").mean == (0.485, 0.456, 0.406)
    assert dataclasses.asdict(final.preprocess("classify"))["size"] == 64


def test_fp16_overflow_skips_the_update_without_counting_it(tmp_path):
    trainer, summary, _, _ = fit(tmp_path, n=24, precision="fp16", fp16_init_scale=2.0 ** 17, update_freq=1,
                                 max_update=2, max_epoch=0)
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    header = rows[0].split(",")
    skipped = [r for r in rows[1:] if r.split(",")[header.index("overflow")] == "1"]
    assert skipped and summary["num_updates"] == 2
    assert trainer.scaler.get_scale() < 2.0 ** 17
    assert trainer.scheduler.num_updates == 2
    from openofa.train.checkpoint import load_training_checkpoint  # the scaler state survives weights_only

    assert load_training_checkpoint(tmp_path / "last.pt")["scaler"]["scale"] == trainer.scaler.get_scale()
