"""Validation inside training uses the task metric through the shared generator."""

from __future__ import annotations

import json

from openofa.mini.scenes import write_dataset
from openofa.train.recipe import TrainConfig
from openofa.train.validate import task_evaluate


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


def test_validation_decodes_with_the_prompt_type_it_trained_with(tmp_path, tiny_model, monkeypatch):
    # a grounding recipe with prompt_type prev_output validates with ground_prompt_type; vqa with prompt_type
    import openofa.evaluate

    seen = []

    def fake_eval(ofa, task, path, **kw):
        seen.append((task, dict(ofa.task_settings)))
        return {"score": 1.0, "count": 1}

    monkeypatch.setattr(openofa.evaluate, "evaluate", fake_eval)
    files = write_dataset(tmp_path, n=2, seed=901)
    for task, file, key in (("refcoco", "ground", "ground_prompt_type"), ("vqa", "vqa", "prompt_type")):
        cfg = TrainConfig(task=task, model="tiny", valid_data=str(files[file]), best_metric="acc",
                          data={"patch_image_size": 64, "prompt_type": "prev_output"})
        task_evaluate(cfg, tiny_model.config, valid=None)(tiny_model)
        assert seen[-1][0] == task and seen[-1][1].get(key) == "prev_output"
        other = "prompt_type" if key == "ground_prompt_type" else "ground_prompt_type"
        assert other not in seen[-1][1]
    tiny_model.eval()
