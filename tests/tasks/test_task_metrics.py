"""Every task scores its own predictions: one headline metric per task of openofa.tasks."""

from __future__ import annotations

import pytest

from openofa.tasks import TASKS, get_task


def _score(task, preds, refs, layout=None):
    t = get_task(task)
    return t.metric(preds, refs, layout or t.layouts[0])[t.metric_name]


def test_every_task_names_its_headline_and_returns_it():
    for name, cls in TASKS.items():
        assert cls.metric_name and cls.output, name


def test_headlines():
    refs = [["a dog on the grass", "a brown dog in a field"], ["a red bus", "a bus on a street"],
            ["two cats sleeping", "cats on a bed"]]
    assert _score("caption", ["a dog on the grass", "a red bus", "a cat"], refs) > 0
    assert _score("vqa", ["yes", "2"], [["yes"] * 10, ["two"] * 3 + ["3"] * 7]) == pytest.approx((1.0 + 0.0) / 2)
    assert _score("vqa", ["yes", "2"], ["1.0|!+yes", "0.6|!+2&&0.3|!+3"]) == pytest.approx((1.0 + 0.6) / 2)
    assert _score("ground", [[0, 0, 10, 10]], [[0, 0, 10, 12]]) == 1.0
    for task in ("entail", "classify", "classify-text"):
        assert _score(task, ["yes", "no"], ["yes", "yes"]) == 0.5
    assert _score("summarize", ["police arrest 11 people"], ["police arrest ## people"]) == pytest.approx(1.0)


def test_cola_adds_matthews_correlation():
    from openofa.data.layouts import get_layout

    t = get_task("classify-text")
    scores = t.metric(["yes", "no", "yes", "no"], ["yes", "no", "no", "no"], get_layout("cola"))
    assert scores["accuracy"] == 0.75 and 0 < scores["MCC"] < 1
    assert "MCC" not in t.metric(["yes"], ["yes"], get_layout("sst2"))


def test_detection_f1_matches_label_and_overlap_once():
    ref = [[{"box": [0, 0, 10, 10], "label": "red square"}, {"box": [20, 20, 30, 30], "label": "blue circle"}]]
    same = _score("detect", ref, ref)
    assert same == 1.0
    # a duplicate of one object is a false positive; a wrong label is no match
    pred = [[{"box": [0, 0, 10, 10], "label": "red square"}, {"box": [0, 0, 10, 10], "label": "red square"},
             {"box": [20, 20, 30, 30], "label": "red circle"}]]
    scores = get_task("detect").metric(pred, ref, get_task("detect").layouts[0])
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 2)
    assert scores["F1@0.5"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    # a box far off does not match
    assert _score("detect", [[{"box": [50, 50, 60, 60], "label": "red square"}]], [ref[0][:1]]) == 0.0
