"""The datasets a recipe trains and validates on: ``task: synthetic`` (no files), ``task:
mixture`` (:mod:`openofa.train.mixture`) or one task's files through ``openofa.data``; and the
recipe's closed answer list."""

from __future__ import annotations

from typing import Any

from openofa.errors import OFAError
from openofa.train.mixture import Concat, mixture_datasets

__all__ = ["build_datasets", "candidate_answers", "tokenizer_for"]


def tokenizer_for(model_config):
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
        return mixture_datasets(cfg, build_dataset, tokenizer_for(model_config), image_cache)
    if not cfg.train_data:
        raise OFAError("train_data is not set (give it in the recipe or with --set train_data=PATH)")
    options = dict(cfg.data)
    options.setdefault("tokenizer", tokenizer_for(model_config))
    options["shard"] = None
    if image_cache is not None:
        options["image_cache"] = image_cache
    if cfg.criterion == "scst":
        options.setdefault("scst", True)  # caption targets keep every reference, as the original's --scst

    def one(paths, split):
        paths = [paths] if isinstance(paths, str) else list(paths)
        parts = [build_dataset(cfg.task, p, split=split, **options) for p in paths]
        return parts[0] if len(parts) == 1 else Concat(parts)

    train = one(cfg.train_data, "train")
    valid = one(cfg.valid_data, "valid") if cfg.valid_data else None
    return train, valid


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
