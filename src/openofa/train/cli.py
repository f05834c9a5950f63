"""``ofa train RECIPE [--set key=value ...] [--resume] [--run-dir DIR]``.

One process::

    python -m openofa.train.cli recipes/caption_base.yaml --set init_from=ofa_base.pt

Many processes (one machine or many) are started by torchrun, never by us::

    torchrun --nproc_per_node 8 -m openofa.train.cli recipes/caption_large.yaml

``RECIPE`` is a YAML/JSON file or the name of one in the repository's ``recipes/`` folder. A
run continues from ``<run_dir>/last.pt`` when it exists (``--resume`` insists on it,
``--fresh`` refuses to overwrite it). Bad input ends with ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from openofa.errors import OFAError


def build_parser(prog: str = "ofa train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="train or finetune an OFA model from a recipe")
    p.add_argument("recipe", help="a recipe file (YAML or JSON) or the name of one in recipes/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (data.max_src_length=100 for keys of a section); repeatable")
    p.add_argument("--run-dir", help="where checkpoints, logs and exported weights go (recipe: run_dir)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt; fail if there is none")
    g.add_argument("--fresh", action="store_true", help="start a new run; fail if RUN_DIR/last.pt exists")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return p


def configs_from_args(args: argparse.Namespace) -> list:
    """One config per stage of the recipe (most recipes have one)."""
    from openofa.train.recipe import find_recipe, load_stages

    return load_stages(find_recipe(args.recipe), _overrides(args))


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    if args.resume:
        overrides.append("resume=always")
    elif args.fresh:
        overrides.append("resume=never")
    return overrides


# ---- model and data ------------------------------------------------------------------------------------
def build_model_for(cfg) -> Any:
    """The model a recipe starts from: ``init_from`` weights (any checkpoint layout) with the
    recipe's ``model_config`` applied, or fresh weights of size ``model`` (seeded by ``seed``)."""
    import torch

    from openofa.config import get_config
    from openofa.model import build_model, model_from_state_dict

    overrides = dict(cfg.model_config)
    size = get_config(cfg.model)
    image_size = cfg.data.get("patch_image_size") if isinstance(cfg.data, dict) else None
    if image_size:
        overrides.setdefault("patch_image_size", int(image_size))
    torch.manual_seed(cfg.seed)  # identical initial weights in every process
    if not cfg.init_from:
        return build_model(_with_preprocessing(dataclasses.replace(size, **overrides), cfg, {}))
    from openofa.checkpoints import load_checkpoint

    try:
        config, state_dict, meta = load_checkpoint(cfg.init_from)
    except OFAError as e:
        raise OFAError(f"init_from: {e}") from None
    shape = ("encoder_layers", "decoder_layers", "encoder_embed_dim", "resnet_type")
    expected = {k: overrides.get(k, getattr(size, k)) for k in shape}
    if any(getattr(config, k) != expected[k] for k in shape):
        got = ", ".join(f"{k}={getattr(config, k)}" for k in shape)
        want = ", ".join(f"{k}={v}" for k, v in expected.items())
        raise OFAError(f"init_from {cfg.init_from}: a model with {got}, but the recipe (model: {cfg.model} "
                       f"and model_config) asks for {want}")
    # the file's architecture flags (disable_entangle of a released file ...) stay as they are
    config = _with_preprocessing(dataclasses.replace(config, **overrides), cfg, meta.get("task") or {})
    return model_from_state_dict(config, state_dict, source=f"init_from {cfg.init_from} (model_config "
                                                             f"{cfg.model_config})")


def _with_preprocessing(config, cfg, file_settings: dict):
    """``config`` recording the image preprocessing the model is trained with (the recipe's data
    settings over those of the file it starts from), so that the exported model carries it."""
    from openofa.checkpoints.load import with_task_settings

    data = cfg.data if isinstance(cfg.data, dict) else {}
    names = ("patch_image_size", "imagenet_default_mean_and_std")
    keep = {k: v for k, v in file_settings.items() if k in names}
    keep.update({k: data[k] for k in names if data.get(k) is not None})
    return with_task_settings(config, keep)


def _tokenizer(model_config):
    """The tokenizer of the model being trained (its language, text vocabulary and bins)."""
    if model_config is None:
        return "en"
    from openofa.text.tokenizer import OFATokenizer

    return OFATokenizer.for_config(model_config)


def build_datasets(cfg, model_config=None, image_cache=None) -> tuple[Any, Any]:
    """(train, valid) datasets of a recipe (valid may be None). ``task: synthetic`` needs no files;
    every other task goes through ``openofa.data.build_dataset``. Each process gets the whole
    dataset (``shard=None``): the trainer splits the batches between processes itself.
    ``image_cache``: a :class:`openofa.data.image_cache.DecodedImages` shared by the datasets."""
    vocab = model_config.vocab_size if model_config is not None else 1000
    if cfg.task == "synthetic":
        from openofa.train.synthetic import synthetic_datasets

        return synthetic_datasets(cfg.data, vocab_size=vocab, seed=cfg.seed)
    try:
        from openofa.data import build_dataset
    except ImportError as e:
        raise OFAError(f"task {cfg.task!r} needs the data layer (openofa.data.build_dataset), which is not "
                       f"available here ({e}); task: synthetic runs without it") from None
    if cfg.task == "mixture":
        return _mixture_datasets(cfg, build_dataset, model_config, image_cache)
    if not cfg.train_data:
        raise OFAError("train_data is not set (give it in the recipe or with --set train_data=PATH)")
    options = dict(cfg.data)
    options.setdefault("tokenizer", _tokenizer(model_config))
    options["shard"] = None
    if image_cache is not None:
        options["image_cache"] = image_cache
    if cfg.criterion == "scst":
        options.setdefault("scst", True)  # caption targets keep every reference, as the original's --scst

    def one(paths, split):
        paths = [paths] if isinstance(paths, str) else list(paths)
        parts = [build_dataset(cfg.task, p, split=split, **options) for p in paths]
        return parts[0] if len(parts) == 1 else _Concat(parts)

    train = one(cfg.train_data, "train")
    valid = one(cfg.valid_data, "valid") if cfg.valid_data else None
    return train, valid


_TASK_EXTRAS = ("conf", "w_resize_ratio", "h_resize_ratio", "region_coord", "ref", "prefix", "constraint_mask")


def _mixture_datasets(cfg, build_dataset, model_config, image_cache=None) -> tuple[Any, Any]:
    """Several tasks in one training set; batches mix tasks, so task-specific extras (VQA
    confidences, candidate-list constraint masks, ...) are dropped and every sample contributes
    plain token-level cross-entropy."""
    if not cfg.mixture:
        raise OFAError("task: mixture needs 'mixture: {task: train file, ...}' in the recipe")
    shared = {k: v for k, v in cfg.data.items() if not isinstance(v, dict)}
    shared.setdefault("tokenizer", _tokenizer(model_config))
    shared["shard"] = None
    if image_cache is not None:
        shared["image_cache"] = image_cache
    parts = [build_dataset(task, path, split="train", **{**shared, **dict(cfg.data.get(task) or {})})
             for task, path in cfg.mixture.items()]
    ratios = getattr(cfg, "mixture_ratio", None) or {}
    if ratios:
        main = len(parts[0])
        parts = [_Cycled(part, max(1, round(float(ratios[task]) * main))) if task in ratios else part
                 for task, part in zip(cfg.mixture, parts)]
    return _Mixture(parts), None


class _Cycled:
    """``n`` examples of ``dataset`` per epoch, continuing through it from epoch to epoch (epoch
    ``e`` reads rows ``(e - 1) * n ..`` modulo its length), so a small share of a large file is
    seen piece by piece. Which row an index reads depends only on the epoch."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n, self.epoch = dataset, int(n), 1
        self.task = getattr(dataset, "task", None)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        size = len(self.dataset)
        if size == 0:
            raise IndexError("empty dataset")
        return self.dataset[((max(self.epoch, 1) - 1) * self.n + i) % size]

    def collater(self, samples):
        return self.dataset.collater(samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class _Concat:
    """Several files of one task as one dataset (the original's comma-separated data files)."""

    def __init__(self, parts: list) -> None:
        import torch

        self.parts = parts
        self.inner = torch.utils.data.ConcatDataset(parts)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        return self.inner[i]

    def collater(self, samples):
        return self.parts[0].collater(samples)

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


class _Mixture(_Concat):
    """Datasets of different tasks as one; the collater keeps only what every task has. A mixture
    of the pretraining files alone keeps ``conf``: every one of their samples has it, and the
    original's pretraining objective weights samples by it (text, image, detection: 2)."""

    def __init__(self, parts: list) -> None:
        from openofa.data.layouts import PRETRAIN_TASKS

        super().__init__(parts)
        drop = set(_TASK_EXTRAS)
        if all(getattr(p, "task", None) in PRETRAIN_TASKS for p in parts):
            drop.discard("conf")
        self.drop = drop

    def collater(self, samples):
        from openofa.data.collate import flatten_samples

        flat = flatten_samples(samples)
        plain = [None if s is None or not isinstance(s, dict) else {k: v for k, v in s.items()
                                                                     if k not in self.drop}
                 for s in flat]
        return self.parts[0].collater([p if p is not None else s for p, s in zip(plain, flat)])


def candidate_answers(cfg) -> list[str] | None:
    """The recipe's closed answer list (``data.ans2label_file`` or ``data.ans2label_dict``)."""
    data = dict(cfg.data or {})
    if data.get("ans2label_file") is not None:
        from openofa.data.answers import read_answers

        return read_answers(data["ans2label_file"])
    value = data.get("ans2label_dict")
    if value is None:
        return None
    if isinstance(value, dict):
        value = list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value):
        raise OFAError(f"data.ans2label_dict: expected a list of answer strings or an {{answer: index}} mapping "
                       f"(quote 'yes' and 'no' in YAML), got {value!r}")
    return [a.strip() for a in value]


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
    candidates = candidate_answers(cfg)
    if candidates is not None:
        # score (or constrain decoding) against the training answer list, as the original's
        # validation does, instead of the answers found in the validation file
        from openofa.data.layouts import canonical_task

        task = canonical_task(cfg.task)
        if task == "vqa" and options.get("mode", "allcand") != "beam":
            options.setdefault("mode", "allcand")
            options.setdefault("answers", candidates)
        elif task == "classify":
            options.setdefault("classes", candidates)

    settings = None
    if data.get("prompt_type"):  # decode as trained: grounding has its own key (ground_prompt_type)
        from openofa.data.layouts import canonical_task

        key = "ground_prompt_type" if canonical_task(cfg.task) == "ground" else "prompt_type"
        settings = {key: data["prompt_type"]}
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
    if cfg.task == "trunk":  # the image trunk alone (openofa.train.trunk), before the distributed setup
        from openofa.train.trunk import pretrain_trunk

        return pretrain_trunk(cfg, image_cache=images)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configs = configs_from_args(args)
        if args.print_config:
            import json

            dicts = [cfg.to_dict() for cfg in configs]
            print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
            return 0
        *earlier, last = configs
        from openofa.data.image_cache import DecodedImages
        from openofa.train.feature_cache import FeatureStore

        features = FeatureStore()  # the trunk's remembered features, from one stage to the next
        images = DecodedImages()  # decoded image files (stages with image_cache_mb)
        for i, cfg in enumerate(earlier):  # stages before the last: skip those already exported
            name, final = Path(cfg.run_dir).name, Path(cfg.run_dir) / "final"
            if cfg.resume != "never" and (final / "model.safetensors").is_file():
                print(f"stage {name}: already done ({final}), going on", file=sys.stderr)
            else:
                print(f"stage {i + 1}/{len(configs)}: {name}", file=sys.stderr)
                run(cfg, feature_memory=features, image_memory=images)
        if earlier:
            print(f"stage {len(configs)}/{len(configs)}: {Path(last.run_dir).name}", file=sys.stderr)
        summary = run(last, feature_memory=features, image_memory=images)
    except OFAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run again with the same command to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    if summary.get("rank", 0) != 0:
        return 0
    best = summary.get("best")
    tail = f", best {summary['best_metric']} {best:.4g} at update {summary['best_update']}" if best is not None else ""
    print(f"done: {summary['num_updates']} updates in {summary['run_dir']}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

