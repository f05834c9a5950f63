"""Training from a config: build the model and the datasets it names, pick its validation, and run
the trainer (or the initialisation hook its ``task`` names, :mod:`openofa.train.extensions`)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from openofa.train.datasets import build_datasets
from openofa.train.extensions import initialisation_for
from openofa.train.model import build_model_for
from openofa.train.validate import task_evaluate

__all__ = ["run", "run_stages"]


def run(cfg, *, evaluate=None, hooks=(), feature_memory=None, image_memory=None) -> dict:
    """Build everything a config names and train; returns the trainer's summary. The stages of a
    recipe share one ``feature_memory`` (see ``openofa.train.feature_cache``) and one
    ``image_memory`` (a ``DecodedImages``, used when the stage sets ``image_cache_mb``)."""
    from openofa.train.distributed import cleanup, init_distributed
    from openofa.train.trainer import Trainer

    images = None
    if cfg.image_cache_mb:
        from openofa.data.image_cache import DecodedImages

        images = image_memory if image_memory is not None else DecodedImages()
        images.resize(cfg.image_cache_mb)
    initialise = initialisation_for(cfg.task)
    if initialise is not None:  # a stage that prepares the model, run before the distributed setup
        return initialise(cfg, image_cache=images)
    info = init_distributed(cfg.device, need_group=cfg.parallel == "fsdp")
    try:
        model = build_model_for(cfg)
        train, valid = build_datasets(cfg, model.config, image_cache=images)
        if evaluate is None and valid is not None:
            evaluate = task_evaluate(cfg, model.config, valid)
            if evaluate is None and cfg.best_metric not in ("loss", "nll_loss"):
                if info.is_main:
                    print(f"note: no {cfg.best_metric} evaluation for task {cfg.task} yet; validating by "
                          "label-smoothed loss (best = lowest)", file=sys.stderr)
                cfg = dataclasses.replace(cfg, best_metric="loss", maximize_best=False)
        trainer = Trainer(cfg, model, train, valid_data=valid, evaluate=evaluate, hooks=hooks, dist_info=info,
                          feature_memory=feature_memory)
        summary = trainer.fit()
        if images is not None and info.is_main:
            print(images.summary(), file=sys.stderr)
        return summary
    finally:
        cleanup(info)


def run_stages(configs) -> dict:
    """Run a recipe's stages in order (those already exported are skipped); the last one's summary."""
    *earlier, last = configs
    from openofa.data.image_cache import DecodedImages
    from openofa.train.feature_cache import FeatureStore

    features = FeatureStore()  # the trunk's remembered features, from one stage to the next
    images = DecodedImages()  # decoded image files (stages with image_cache_mb)
    for i, cfg in enumerate(earlier):  # stages before the last: skip those already exported
        name, final = Path(cfg.run_dir).name, Path(cfg.run_dir) / "final"
        if cfg.resume != "never" and ((final / "model.safetensors").is_file()
                                      or (final / "adapter_model.safetensors").is_file()):
            print(f"stage {name}: already done ({final}), going on", file=sys.stderr)
        else:
            print(f"stage {i + 1}/{len(configs)}: {name}", file=sys.stderr)
            run(cfg, feature_memory=features, image_memory=images)
    if earlier:
        print(f"stage {len(configs)}/{len(configs)}: {Path(last.run_dir).name}", file=sys.stderr)
    return run(last, feature_memory=features, image_memory=images)
