"""The order of training examples, and how it is cut into micro-batches per process.

Epoch ``e`` visits the examples in ``permutation(seed, e)`` (numpy's PCG64 seeded with
``[seed, e]``). The permutation is cut into *global* micro-batches of ``batch_size * world_size``
examples; process ``r`` takes the ``r``-th contiguous slice of each (``np.array_split``, so a short
last micro-batch is spread as evenly as possible). One process with ``batch_size = 8`` and four
processes with ``batch_size = 2`` therefore see the same examples in every update. A process
whose slice is empty (a last micro-batch with fewer examples than processes) gets a *dummy*
batch: one real example whose loss is multiplied by zero, so collective operations stay in step.

The order is a pure function of (seed, epoch, dataset size, batch layout): a resumed run rebuilds
it and skips the micro-batches already consumed, without reading them.

Data augmentation: :class:`EpochItems` runs ``dataset[i]`` with Python's, numpy's and torch's
global generators seeded from (seed, epoch, i) and restores them afterwards, so random crops or
flips depend only on the example and the epoch, not on worker processes or on where a run was
resumed (datasets that keep their own generator objects are outside this guarantee).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Sequence

import numpy as np
import torch

from openofa.errors import OFAError


def epoch_permutation(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    if not shuffle:
        return np.arange(num_examples)
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def order_fingerprint(order: np.ndarray) -> str:
    """A short digest of an epoch's order (stored in checkpoints to detect a changed dataset)."""
    return hashlib.sha1(np.ascontiguousarray(order, dtype=np.int64).tobytes()).hexdigest()[:16]


def shard_batches(order: Sequence[int], batch_size: int, world_size: int = 1, rank: int = 0) -> list[list[int]]:
    """This process's micro-batches (lists of example indices); a dummy batch is ``[-1 - i]``."""
    if batch_size <= 0:
        raise OFAError(f"batch_size must be > 0, got {batch_size}")
    order = np.asarray(order)
    span = batch_size * world_size
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        mine = np.array_split(chunk, world_size)[rank]
        batches.append([int(i) for i in mine] if len(mine) else [-1 - int(chunk[0])])
    return batches


def micro_batches_per_epoch(num_examples: int, batch_size: int, world_size: int = 1) -> int:
    return -(-num_examples // (batch_size * world_size))


def updates_per_epoch(num_examples: int, batch_size: int, world_size: int, update_freq: int) -> int:
    """fairseq: ``ceil(batches / update_freq)`` (the last update of an epoch may be shorter)."""
    return -(-micro_batches_per_epoch(num_examples, batch_size, world_size) // update_freq)


class _SeededRNG:
    """Seed the global Python/numpy/torch CPU generators for one example, restore them after."""

    def __init__(self, seed: int, epoch: int, index: int) -> None:
        self.key = (seed, epoch, index)

    def __enter__(self) -> None:
        self.saved = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        s = int.from_bytes(hashlib.blake2b(repr(self.key).encode(), digest_size=8).digest(), "little")
        random.seed(s)
        np.random.seed(s % 2 ** 32)
        torch.random.default_generator.manual_seed(s % 2 ** 63)

    def __exit__(self, *exc: Any) -> None:
        py, npy, th = self.saved
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(th)


class EpochItems(torch.utils.data.Dataset):
    """``dataset`` seen through one epoch: item ``i`` is ``(dataset[i], False)`` read under
    per-example seeds; a negative index ``-1 - i`` gives ``(dataset[i], True)`` (a dummy)."""

    def __init__(self, dataset: Any, seed: int, epoch: int, seeded: bool = True) -> None:
        self.dataset, self.seed, self.epoch, self.seeded = dataset, seed, epoch, seeded

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, bool]:
        dummy = index < 0
        i = -1 - index if dummy else index
        if not self.seeded:
            return self.dataset[i], dummy
        with _SeededRNG(self.seed, self.epoch, i):
            return self.dataset[i], dummy


class CollateWithDummy:
    """Wrap a collater: drop the dummy flags and mark the batch with ``"dummy": True`` if any."""

    def __init__(self, collate_fn: Callable[[list], dict]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: list[tuple[Any, bool]]) -> dict:
        batch = self.collate_fn([it for it, _ in items])
        if any(d for _, d in items):
            batch["dummy"] = True
        return batch


def make_loader(dataset: Any, batches: list[list[int]], collate_fn: Callable, *, seed: int, epoch: int,
                num_workers: int = 0, pin_memory: bool = False, seeded: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader over exactly ``batches`` (in order). Its worker seeds come from its own
    generator, so creating it does not draw from the global torch generator."""
    gen = torch.Generator()
    gen.manual_seed(seed * 1_000_003 + epoch)
    return torch.utils.data.DataLoader(
        EpochItems(dataset, seed, epoch, seeded), batch_sampler=batches, collate_fn=CollateWithDummy(collate_fn),
        num_workers=num_workers, pin_memory=pin_memory, generator=gen,
        persistent_workers=False,
    )


def default_collate_fn(dataset: Any) -> Callable[[list], dict]:
    """The dataset's own collater (``dataset.collater`` as in fairseq, or ``dataset.collate``)."""
    for name in ("collater", "collate"):
        fn = getattr(dataset, name, None)
        if callable(fn):
            return fn
    raise OFAError(f"{type(dataset).__name__} has no collater; pass collate_fn")
