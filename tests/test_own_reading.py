"""The project's own reading model (``mini-read``), shipped in the package: measured on held-out
text lines.

The lines are the reading scenes with seeds 0..N-1; the training data
(``recipes/scenes_mini_read.yaml``) starts at seed 100000, so no image was seen in training, and
most made-up words never occur there (``tests/mini/test_read.py``). Each line goes through
``m.ocr`` as a user's image would: the OCR task's preprocessing, prompt, beam search and
post-processing. The floors are the project's target (80% exact match on short words) and the
per-kind figures a little below what was measured (docs/ocr.md).
"""

from __future__ import annotations

import pytest

from openofa.mini.read import reading_scene, reading_text
from openofa.weights import bundled_model

N_LINES = 150
ACCURACY_FLOOR = 0.80  # exact match over all held-out lines (the project's target)


@pytest.fixture(scope="module")
def reader():
    import openofa

    assert bundled_model("mini-read") is not None, "the package ships no reading model in openofa/weights/mini_read"
    return openofa.load("mini-read")


@pytest.fixture(scope="module")
def readings(reader):
    scenes = [reading_scene(seed) for seed in range(N_LINES)]
    got = reader.ocr([s.line for s in scenes])
    return [(s.answer, s.kind, g) for s, g in zip(scenes, got)]


def test_reads_held_out_lines(readings):
    right = sum(text == got for text, _, got in readings)
    assert right / len(readings) >= ACCURACY_FLOOR, f"{right} of {len(readings)} lines read exactly"


@pytest.mark.parametrize("kind", ["word", "madeup", "number"])
def test_reads_each_kind(readings, kind):
    rows = [(text, got) for text, k, got in readings if k == kind]
    right = sum(text == got for text, got in rows)
    assert right / len(rows) >= ACCURACY_FLOOR - 0.1, f"{kind}: {right} of {len(rows)} read exactly"


def test_reads_made_up_words_it_never_saw(readings):
    """Letters, not whole words: made-up words absent from the first 40,000 training lines."""
    train = {reading_text(s)[0].lower() for s in range(100000, 140000)}
    new = [(text, got) for text, k, got in readings if k == "madeup" and text not in train]
    assert len(new) >= 20
    right = sum(text == got for text, got in new)
    assert right / len(new) >= ACCURACY_FLOOR - 0.1, f"{right} of {len(new)} unseen made-up words read exactly"


def test_reads_capitals(reader):
    """Capitalised and upper-case words, read in lower case (the OCR targets' normalisation)."""
    scenes = [s for s in (reading_scene(seed) for seed in range(N_LINES, 3 * N_LINES))
              if s.kind != "number" and not s.text.islower()][:40]
    got = reader.ocr([s.line for s in scenes])
    right = sum(s.answer == g for s, g in zip(scenes, got))
    assert len(scenes) == 40 and right / len(scenes) >= ACCURACY_FLOOR - 0.1, f"{right} of {len(scenes)}"


def test_ocr_command_uses_the_reading_model(tmp_path, capsys):
    from openofa.cli import main
    from openofa.mini.read import render_text

    path = tmp_path / "line.png"
    render_text("Kelp", seed=3)[0].save(path)
    code = main(["ocr", str(path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "reading model" in captured.err
    assert '"kelp"' in captured.out


def test_eval_ocr_uses_the_reading_model(tmp_path, capsys):
    """``ofa eval ocr`` on the files ``ofa scenes --read`` writes (held-out seeds), no --model."""
    import json

    from openofa.cli import main
    from openofa.mini.read import write_reading_dataset

    path = write_reading_dataset(tmp_path / "lines", n=30, seed=500)
    code = main(["eval", "ocr", str(path), "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "reading model" in captured.err
    metrics = json.loads(captured.out)
    assert metrics["accuracy"] >= ACCURACY_FLOOR and metrics["1-NED"] >= metrics["accuracy"]


def test_the_small_model_points_to_the_reading_model():
    import openofa
    from openofa.errors import OFAError

    with pytest.raises(OFAError, match=r"was not trained for ocr .*openofa\.load\('mini-read'\)"):
        openofa.load().ocr(reading_scene(0).line)
