"""``ofa eval TASK``: run a task over an evaluation file and score it with the task's metric.

Reads the original TSV layout or JSONL+images (``openofa.data``), predicts through the same API
as every other command, writes ``predictions.json`` and ``metrics.json`` and returns the metrics.
What a row's inputs and reference are, and how predictions are scored, is the task's
(:mod:`openofa.tasks`): this module only runs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openofa.errors import OFAError


def evaluate(ofa, task: str, path: str | Path, *, split: str = "test", columns: Any = None,
             out_dir: str | Path | None = None, limit: int | None = None, batch_size: int | None = None,
             progress: bool = True, classes: list[str] | None = None, **options: Any) -> dict[str, Any]:
    """Predict every row of ``path`` and score against its references. Returns the metrics dict.
    ``task``: a task, one of its data layouts (a GLUE task) or an alias (``refcoco``)."""
    from openofa.data.dataset import open_records
    from openofa.tasks import task_of_layout

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise OFAError(f"limit must be a positive number of rows, got {limit!r}")
    reader = open_records(task, path, split=split, columns=columns)
    layout = reader.layout
    if layout.owner is None:
        raise OFAError(f"{task}: pretraining files have no evaluation; evaluate one of the tasks they teach")
    runner = task_of_layout(layout)
    records = []
    for rec in reader:
        records.append(rec)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise OFAError(f"{path}: no rows to evaluate")
    refs = [runner.reference(r) for r in records]
    if classes:
        options["classes"] = classes
    options = runner.eval_options(refs, options)
    inputs = [runner.inputs_of(r, layout) for r in records]
    results = ofa.run(runner.name, inputs, batch_size=batch_size, progress=progress, **options)
    preds = [runner.prediction(r) for r in results]
    scores = runner.metric(preds, refs, layout)
    metrics: dict[str, Any] = {runner.metric_name: scores[runner.metric_name], "count": len(preds),
                               "task": layout.task}
    metrics.update({k: v for k, v in scores.items() if k != runner.metric_name})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = [{"id": r.id, "prediction": p, "reference": ref,
                 **{k: v for k, v in res.items() if k != runner.output}}
                for r, p, ref, res in zip(records, preds, refs, results)]
        (out / "predictions.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False, default=str))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
