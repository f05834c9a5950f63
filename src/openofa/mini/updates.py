"""The update loop of the small models' own stages (``task: trunk``, ``task: vq``).

Those stages train something the trainer does not (the image trunk alone, the VQ tokenizer), on
tensors they prepare themselves; they share this: one optimizer update per batch (clipping as
the recipe says, the schedule stepped), and a log line with the mean of every loss term over the
last ``log_every`` updates, kept in ``history`` for the stage's summary.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

__all__ = ["Updates"]


class Updates:
    def __init__(self, name: str, cfg, optimizer: torch.optim.Optimizer, schedule, params: list) -> None:
        self.name, self.cfg, self.opt, self.sched, self.params = name, cfg, optimizer, schedule, params
        self.count, self.sums, self.start = 0, {}, time.time()
        self.history: list[dict[str, Any]] = []

    @property
    def done(self) -> bool:
        return self.count >= self.cfg.max_update

    def step(self, out: dict[str, torch.Tensor]) -> None:
        """One update on ``out["loss"]``; every entry of ``out`` is logged."""
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_norm)
        self.opt.step()
        self.count += 1
        self.sched.step(self.count)
        for k, v in out.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        if cfg.log_every and (self.count % cfg.log_every == 0 or self.done):
            n = cfg.log_every if self.count % cfg.log_every == 0 else self.count % cfg.log_every
            self.history.append({"update": self.count, **{k: v / n for k, v in self.sums.items()}})
            stats = " | ".join(f"{k} {v / n:.4g}" for k, v in self.sums.items())
            print(f"{self.name} | update {self.count} | {stats} | lr {self.sched.get_lr():.3e} | "
                  f"{(time.time() - self.start) / self.count:.3f} s/update", file=sys.stderr)
            self.sums = {}
