"""Datasets made of several: the files of one task as one dataset (:class:`Concat`), a share
of a file per epoch (:class:`Cycled`) and several tasks in one training set (:class:`Mixture`,
recipe ``task: mixture`` with ``mixture`` and ``mixture_ratio``)."""

from __future__ import annotations

from typing import Any

from openofa.errors import OFAError

__all__ = ["mixture_datasets", "Cycled", "Concat", "Mixture"]

_TASK_EXTRAS = ("conf", "w_resize_ratio", "h_resize_ratio", "region_coord", "ref", "prefix", "constraint_mask")


def mixture_datasets(cfg, build_dataset, tokenizer, image_cache=None) -> tuple[Any, Any]:
    """Several tasks in one training set; batches mix tasks, so task-specific extras (VQA
    confidences, candidate-list constraint masks, ...) are dropped and every sample contributes
    plain token-level cross-entropy. ``build_dataset``: :func:`openofa.data.build_dataset`;
    ``tokenizer``: the default of the ``tokenizer`` data option."""
    if not cfg.mixture:
        raise OFAError("task: mixture needs 'mixture: {task: train file, ...}' in the recipe")
    shared = {k: v for k, v in cfg.data.items() if not isinstance(v, dict)}
    shared.setdefault("tokenizer", tokenizer)
    shared["shard"] = None
    if image_cache is not None:
        shared["image_cache"] = image_cache
    def one(task, paths):  # a task's file, or a list of its files read as one (Concat)
        paths = [paths] if isinstance(paths, str) else list(paths)
        files = [build_dataset(task, p, split="train", **{**shared, **dict(cfg.data.get(task) or {})}) for p in paths]
        return files[0] if len(files) == 1 else Concat(files)

    parts = [one(task, path) for task, path in cfg.mixture.items()]
    ratios = getattr(cfg, "mixture_ratio", None) or {}
    if ratios:
        main = len(parts[0])
        parts = [Cycled(part, max(1, round(float(ratios[task]) * main))) if task in ratios else part
                 for task, part in zip(cfg.mixture, parts)]
    return Mixture(parts), None


class Cycled:
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


class Concat:
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


class Mixture(Concat):
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
