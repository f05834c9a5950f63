"""Validation by the task's own metric (``best_metric``: cider, vqa_score, acc, ...)."""

from __future__ import annotations

from typing import Any

from openofa.train.datasets import candidate_answers

__all__ = ["task_evaluate"]


def task_evaluate(cfg, model_config, valid) -> Any:
    """The validation metric a recipe names (``best_metric``: cider, vqa_score, acc, ...) as an
    ``evaluate(model) -> dict[str, float]`` callable: the task is run on the validation file
    through the same API and generator as inference (decoding options from ``cfg.eval``; ``limit``
    caps the rows), and the task's headline metric is reported under the recipe's name."""
    if cfg.best_metric in ("loss", "nll_loss") or not cfg.valid_data or cfg.task == "synthetic":
        return None
    valid_path = cfg.valid_data[0] if isinstance(cfg.valid_data, (list, tuple)) else cfg.valid_data
    options = dict(cfg.eval or {})
    limit = options.pop("limit", None)
    data = dict(cfg.data or {})
    from openofa.data.layouts import get_layout
    from openofa.tasks import task_of_layout

    task = task_of_layout(get_layout(cfg.task))
    candidates = candidate_answers(cfg)
    if candidates is not None:
        # score (or constrain decoding) against the training answer list, as the original's
        # validation does, instead of the answers found in the validation file
        options = task.with_candidates(candidates, options)

    settings = None
    if data.get("prompt_type"):  # decode as trained (under the task's own setting name)
        settings = {task.prompt_setting: data["prompt_type"]}
    if data.get("imagenet_default_mean_and_std") is not None:  # validate with the training normalisation
        settings = {**(settings or {}), "imagenet_default_mean_and_std": bool(data["imagenet_default_mean_and_std"])}

    def evaluate(model) -> dict[str, float]:
        from openofa.api import OFA
        from openofa.evaluate import evaluate as run_eval

        net = getattr(model, "module", model)
        was_training = net.training
        ofa = OFA(net.eval(), image_size=data.get("patch_image_size"), task_settings=settings)
        try:
            metrics = run_eval(ofa, cfg.task, valid_path, split="valid", columns=data.get("columns"),
                               limit=limit, batch_size=cfg.batch_size, progress=False, **options)
        finally:
            net.train(was_training)
        scores = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "count"}
        headline = next(iter(scores.values()))
        if cfg.best_metric == "mcc" and "MCC" in scores:
            headline = scores["MCC"]
        scores[cfg.best_metric] = headline
        return scores

    return evaluate
