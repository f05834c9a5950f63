"""The LoRA example on the project's own model (recipes/scenes_mini_lora.yaml): the adapter it
made (tests/fixtures/petl/mini_size_lora, the recipe's final/) teaches the shipped model to
answer "is the circle small or large?" on held-out scenes, leaves its old questions as good as
they were, and is applied from the command line with --adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openofa.mini.scenes import write_dataset

ADAPTER = Path(__file__).parents[1] / "fixtures" / "petl" / "mini_size_lora"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Seeds 0..59: the recipe's data starts at seed 100000, the shipped model's at 1000."""
    return write_dataset(tmp_path_factory.mktemp("held_out_sizes"), n=60, seed=0, size_questions=True)


@pytest.fixture(scope="module")
def models():
    import openofa

    return openofa.load(), openofa.load(adapter=ADAPTER)


def _accuracy(model, file: Path) -> float:
    from openofa.evaluate import evaluate

    return evaluate(model, "vqa", file, progress=False)["VQA accuracy"]


def test_adapter_teaches_the_new_question(models, held_out):
    base, tuned = models
    before, after = _accuracy(base, held_out["vqa_size"]), _accuracy(tuned, held_out["vqa_size"])
    assert after >= 0.85, f"size questions with the adapter: {after:.3f}"  # measured 0.917 (0.0 without)
    assert after - before >= 0.3, f"without {before:.3f}, with {after:.3f}"


def test_old_tasks_stay(models, held_out):
    from openofa.evaluate import evaluate

    base, tuned = models
    before, after = _accuracy(base, held_out["vqa"]), _accuracy(tuned, held_out["vqa"])
    assert after >= before - 0.03, f"old questions: {before:.3f} without the adapter, {after:.3f} with it"
    boxes = [evaluate(m, "ground", held_out["ground"], progress=False)["Acc@0.5"] for m in models]
    assert boxes[1] >= boxes[0] - 0.03, f"grounding: {boxes[0]:.3f} without the adapter, {boxes[1]:.3f} with it"


def test_adapter_records_its_task_and_is_merged(models):
    from openofa.petl.lora import lora_layers

    _, tuned = models
    assert not lora_layers(tuned.model)  # merged into the weights at load: no cost at inference
    assert "vqa" in tuned.trained_tasks()


def test_cli_applies_an_adapter_and_refuses_one_for_another_model(held_out, tmp_path, capsys):
    from openofa.cli import main

    rows = [json.loads(line) for line in held_out["vqa_size"].read_text().splitlines()][:4]
    root = held_out["vqa_size"].parent
    for r in rows:
        assert main(["vqa", str(root / r["image"]), "--question", r["question"], "--adapter", str(ADAPTER),
                     "--json", "--no-progress"]) == 0
    answers = [json.loads(line)["answer"] for line in capsys.readouterr().out.splitlines()]
    assert set(answers) <= {"small", "large"}

    from openofa.checkpoints.recipe import recipe_state_dict
    from openofa.checkpoints.formats import get_format
    from openofa.config import get_config

    cfg = get_config("tiny")
    get_format("ours").save(tmp_path / "tiny", cfg, recipe_state_dict(cfg))
    code = main(["vqa", str(root / rows[0]["image"]), "--question", "what?", "--model", str(tmp_path / "tiny"), "--adapter",
                 str(ADAPTER), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "another model shape" in err[-1]
    assert "Traceback" not in "\n".join(err)
