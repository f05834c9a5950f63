"""``ofa eval TASK``: run a task over an evaluation file and score it with the task's metric.

Reads the original TSV layout or JSONL+images (``openofa.data``), predicts through the same API
as every other command, writes ``predictions.json`` and ``metrics.json`` and returns the metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openofa.errors import OFAError

# the data layer's task names -> the task names of openofa.tasks
_GLUE = ("cola", "sst2", "mnli", "mrpc", "qnli", "qqp", "rte")


def _task_input(task: str, rec) -> dict[str, Any]:
    if task in ("caption", "classify"):
        return {"image": rec.image}
    if task == "vqa":
        return {"image": rec.image, "question": rec.text, "objects": rec.objects}
    if task == "ground":
        return {"image": rec.image, "text": rec.text}
    if task == "entail":
        return {"image": rec.image, "hypothesis": rec.text, "premise": rec.text2}
    if task == "summarize":
        return {"text": rec.text}
    return {"text": rec.text, "text2": rec.text2, "glue_task": task}


def _prediction(task: str, result: dict[str, Any]) -> Any:
    key = {"caption": "caption", "vqa": "answer", "ground": "box", "summarize": "summary"}.get(task, "label")
    return result[key]


def evaluate(ofa, task: str, path: str | Path, *, split: str = "test", columns: Any = None,
             out_dir: str | Path | None = None, limit: int | None = None, batch_size: int | None = None,
             progress: bool = True, classes: list[str] | None = None, **options: Any) -> dict[str, Any]:
    """Predict every row of ``path`` and score against its references. Returns the metrics dict."""
    from openofa.data.dataset import open_records
    from openofa.data.samples import reference
    from openofa.metrics import METRIC_NAMES, METRICS

    reader = open_records(task, path, split=split, columns=columns)
    name = reader.task  # canonical data-layer task name (aliases resolved)
    run_task = "classify-text" if name in _GLUE else name
    if run_task not in METRICS:
        raise OFAError(f"no metric for task {task!r}")
    records = []
    for rec in reader:
        records.append(rec)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise OFAError(f"{path}: no rows to evaluate")
    refs = [reference(name, r) for r in records]
    if run_task == "classify":
        options["classes"] = classes or sorted({str(r) for r in refs})
    if run_task == "vqa" and options.get("answers") is None and options.get("mode") in ("trie", "allcand"):
        options["answers"] = sorted({a for r in refs for a in r})
    inputs = [_task_input(name, r) for r in records]
    results = ofa.run(run_task, inputs, batch_size=batch_size, progress=progress, **options)
    preds = [_prediction(run_task, r) for r in results]
    headline = METRICS[run_task](preds, refs)
    metrics: dict[str, Any] = {METRIC_NAMES[run_task]: headline, "count": len(preds), "task": name}
    if name == "cola":  # CoLA is scored by Matthews correlation
        from openofa.metrics import matthews_correlation

        metrics["MCC"] = float(matthews_correlation(preds, refs))
    if run_task == "caption":
        from openofa.metrics import caption_scores

        metrics.update(caption_scores({i: p for i, p in enumerate(preds)}, {i: r for i, r in enumerate(refs)}))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = [{"id": r.id, "prediction": p, "reference": ref, **{k: v for k, v in res.items()
                                                                    if k not in ("caption", "answer", "box",
                                                                                 "summary", "label")}}
                for r, p, ref, res in zip(records, preds, refs, results)]
        (out / "predictions.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False, default=str))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
