"""`ofa eval`: predictions and metrics over an evaluation file, in both input formats."""

from __future__ import annotations

import json

import pytest

from openofa.cli import main
from openofa.evaluate import evaluate
from openofa.mini.scenes import write_dataset


class Oracle:
    """Stands in for a model: answers each input from the scene data it was built from."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def run(self, task, inputs, **options):
        self.calls.append((task, options))
        return [self.answers[task](x) for x in inputs]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    files = write_dataset(root, n=6, seed=500)
    return root, files


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_perfect_predictions_score_perfectly(scenes, tmp_path):
    root, files = scenes
    caps = {r["image"]: r["caption"] for r in _records(files["caption"])}
    vqa = {(r["image"], r["question"]): next(iter(r["answers"])) for r in _records(files["vqa"])}
    ground = {(r["image"], r["text"]): r["box"] for r in _records(files["ground"])}
    key = lambda x: str(x["image"]).split(str(root) + "/")[-1]  # noqa: E731
    oracle = Oracle({
        "caption": lambda x: {"caption": caps[key(x)]},
        "vqa": lambda x: {"answer": vqa[(key(x), x["question"])]},
        "ground": lambda x: {"box": ground[(key(x), x["text"])]},
    })
    m = evaluate(oracle, "caption", files["caption"], out_dir=tmp_path / "cap", progress=False)
    assert m["count"] == 6 and m["CIDEr-D"] > 3.0 and m["BLEU-4"] == pytest.approx(1.0)
    saved = json.loads((tmp_path / "cap" / "metrics.json").read_text())
    assert saved["CIDEr-D"] == pytest.approx(m["CIDEr-D"])
    preds = json.loads((tmp_path / "cap" / "predictions.json").read_text())
    assert len(preds) == 6 and all(p["prediction"] for p in preds)
    assert list(evaluate(oracle, "vqa", files["vqa"], progress=False).values())[0] == pytest.approx(1.0)
    assert list(evaluate(oracle, "ground", files["ground"], progress=False).values())[0] == pytest.approx(1.0)


def test_wrong_predictions_score_zero(scenes):
    _, files = scenes
    oracle = Oracle({"ground": lambda x: {"box": [0.0, 0.0, 1.0, 1.0]}, "vqa": lambda x: {"answer": "banana"}})
    assert list(evaluate(oracle, "ground", files["ground"], progress=False).values())[0] == 0.0
    assert list(evaluate(oracle, "vqa", files["vqa"], progress=False).values())[0] == 0.0


def test_eval_command_on_a_real_model(scenes, tmp_path, capsys, tiny_model):
    from openofa.checkpoints import save_pretrained
    from openofa.config import get_config

    model_dir = tmp_path / "tiny"
    save_pretrained(model_dir, get_config("tiny"), tiny_model.state_dict())
    _, files = scenes
    code = main(["eval", "caption", str(files["caption"]), "--model", str(model_dir), "--image-size", "256",
                 "--limit", "2", "--max-len-b", "4", "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "CIDEr-D:" in out and "count: 2" in out
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["count"] == 2
