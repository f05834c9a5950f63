"""Inference over several processes started by torchrun::

    torchrun --nproc_per_node 4 -m openofa.cli caption photos/ --json

Each rank loads the model and runs every ``WORLD_SIZE``-th input (rank ``r`` takes inputs
``r, r + N, r + 2N, ...``); rank 0 gathers the results (over gloo, which every machine has) and
prints them in input order, exactly as one process prints them. On CUDA each rank uses the GPU of
its ``LOCAL_RANK``. One process (no torchrun) runs everything and streams as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        def num(name: str, default: int) -> int:
            value = os.environ.get(name, "")
            return int(value) if value.strip().isdigit() else default

        return cls(num("RANK", 0), max(1, num("WORLD_SIZE", 1)), num("LOCAL_RANK", 0))

    @property
    def many(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, n: int) -> list[int]:
        """The indices of this rank's inputs among ``n``."""
        return list(range(self.rank, n, self.world))

    def device(self, device: str) -> str:
        """``cuda`` means this rank's own GPU when there are several ranks."""
        return f"cuda:{self.local_rank}" if self.many and device == "cuda" else device

    def gather(self, results: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        """Every rank's ``(index, result)`` pairs on rank 0, in index order (nothing on the others);
        one process: ``results`` as they come."""
        if not self.many:
            yield from results
            return
        import torch.distributed as dist

        mine = list(results)
        started = not dist.is_initialized()
        if started:
            dist.init_process_group("gloo")
        try:
            every = [None] * self.world if self.main else None
            dist.gather_object(mine, every, dst=0)
        finally:
            if started:
                dist.destroy_process_group()
        if self.main:
            yield from sorted((pair for part in every for pair in part), key=lambda pair: pair[0])
