"""METRICS: one headline metric per task name of openofa.tasks."""

from __future__ import annotations

import pytest

from openofa.metrics import METRIC_NAMES, METRICS
from openofa.tasks import TASKS


def test_every_task_has_a_metric():
    assert set(METRICS) == set(TASKS)
    assert set(METRIC_NAMES) == set(TASKS)


def test_headlines():
    refs = [["a dog on the grass", "a brown dog in a field"], ["a red bus", "a bus on a street"],
            ["two cats sleeping", "cats on a bed"]]
    cider = METRICS["caption"](["a dog on the grass", "a red bus", "a cat"], refs)
    assert cider > 0
    assert METRICS["vqa"](["yes", "2"], [["yes"] * 10, ["two"] * 3 + ["3"] * 7]) == pytest.approx((1.0 + 0.0) / 2)
    assert METRICS["vqa"](["yes", "2"], ["1.0|!+yes", "0.6|!+2&&0.3|!+3"]) == pytest.approx((1.0 + 0.6) / 2)
    assert METRICS["ground"]([[0, 0, 10, 10]], [[0, 0, 10, 12]]) == 1.0
    for task in ("entail", "classify", "classify-text"):
        assert METRICS[task](["yes", "no"], ["yes", "yes"]) == 0.5
    assert METRICS["summarize"](["police arrest 11 people"], ["police arrest ## people"]) == pytest.approx(1.0)
