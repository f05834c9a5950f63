"""Validation inside training uses the task metric through the shared generator."""

from __future__ import annotations

import json

from openofa.scenes import write_dataset
from openofa.train.cli import task_evaluate
from openofa.train.recipe import TrainConfig


def test_task_evaluate_reports_the_recipes_metric(tmp_path, tiny_model):
    files = write_dataset(tmp_path, n=3, seed=900)
    cfg = TrainConfig(task="caption", model="tiny", valid_data=str(files["caption"]), best_metric="cider",
                      maximize_best=True, data={"patch_image_size": 128}, eval={"max_len_b": 3, "limit": 2},
                      batch_size=2)
    evaluate = task_evaluate(cfg, tiny_model.config, valid=None)
    tiny_model.train()
    scores = evaluate(tiny_model)
    assert tiny_model.training  # put back in the mode it was in
    assert "cider" in scores and scores["cider"] == scores["CIDEr-D"] and scores["cider"] >= 0
    assert "BLEU-4" in scores
    tiny_model.eval()


def test_no_task_metric_for_loss_or_synthetic():
    assert task_evaluate(TrainConfig(task="synthetic", best_metric="acc", valid_data="x"), None, None) is None
    assert task_evaluate(TrainConfig(task="caption", best_metric="loss", valid_data="x"), None, None) is None
