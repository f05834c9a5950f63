"""VQA finetuning against a closed candidate-answer list: training with constraint masks, and
validation that scores the list's answers (the original's ``--val-inference-type allcand``)."""

from __future__ import annotations

import json

import pytest

from openofa.mini.scenes import write_dataset
from openofa.train.recipe import TrainConfig
from openofa.train.run import run
from openofa.train.validate import task_evaluate

SMALL = {"encoder_layers": 1, "decoder_layers": 1}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    files = write_dataset(out, n=2, seed=300)
    rows = [json.loads(line) for line in files["vqa"].read_text().splitlines()]
    answers = sorted({a for r in rows for a in r["answers"]})
    (out / "answers.txt").write_text("\n".join(answers + ["purple", "a red car"]) + "\n")
    return files["vqa"], out / "answers.txt", rows


def vqa_config(run_dir, vqa, **kw):
    base = dict(task="vqa", model="mini", train_data=str(vqa), model_config=SMALL, batch_size=4, max_update=2,
                lr=1e-4, warmup_updates=1, data={"patch_image_size": 64, "prompt_type": "prev_output"},
                run_dir=str(run_dir), progress=False, tensorboard=False, validate_every_epochs=0,
                save_every_epochs=0, log_every=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base).validate("test")


def test_training_with_a_candidate_list(tmp_path, scenes):
    vqa, answers, rows = scenes
    losses = {}
    for name, data in (("open", {}), ("closed", {"ans2label_file": str(answers)})):
        seen = []
        cfg = vqa_config(tmp_path / name, vqa, data={"patch_image_size": 64, **data}, valid_data=str(vqa),
                         best_metric="vqa_score", maximize_best=True, validate_every_updates=2,
                         eval={"limit": 3})
        summary = run(cfg, hooks=[lambda tr: seen.append(tr.last_stats["loss"])])
        assert summary["num_updates"] == 2 and len(seen) == 2
        assert 0.0 <= summary["best"] <= 1.0
        losses[name] = seen
    # same weights and batches: with the masks the softmax covers a handful of answer tokens
    # instead of the whole vocabulary, so the loss of the first update is far lower
    assert losses["closed"][0] < losses["open"][0] - 3.0
    log = (tmp_path / "closed" / "valid_log.csv").read_text()
    assert "vqa_score" in log.splitlines()[0]


def test_validation_scores_the_candidate_list_not_the_file_answers(scenes, tiny_model):
    vqa, _, rows = scenes
    # with one candidate every prediction is that answer, so the score is known in advance
    for only in ("one", "blue"):  # 2 and 1 of the first 6 rows
        cfg = TrainConfig(task="vqa", model="tiny", valid_data=str(vqa), best_metric="vqa_score", max_update=1,
                          maximize_best=True, data={"patch_image_size": 64, "ans2label_dict": [only]},
                          eval={"limit": 6}, batch_size=3)
        scores = task_evaluate(cfg, tiny_model.config, valid=None)(tiny_model)
        expected = sum(r["answers"].get(only, 0.0) for r in rows[:6]) / 6
        assert scores["vqa_score"] == pytest.approx(expected)
