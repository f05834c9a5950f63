"""Dynamic batching: requests that arrive close together share one model call.

Requests wait in one bounded queue. A single worker thread takes the oldest request, waits until
``max_batch`` requests of the same kind (same task, same options) have arrived or ``max_wait_ms``
has passed since the oldest arrived, and runs them as one ``OFA.stream`` call. Requests of other
kinds stay queued, in order, for the next batch. Model calls never overlap (the model uses every
core for one batch), so a full queue is the service's back-pressure: :meth:`Batcher.submit`
raises :class:`QueueFull` (HTTP 429) instead of queueing without bound.

A request whose caller gave up (timeout, disconnect) is cancelled and dropped before its batch runs.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from openofa.errors import OFAError


class QueueFull(Exception):
    """The queue holds ``queue_size`` requests already."""


@dataclass
class Job:
    task: str
    inputs: dict[str, Any]
    options: dict[str, Any]
    key: str
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Queue requests and run them in batches on ``ofa`` from one worker thread.

    ``on_batch(size, seconds)`` is told about every model call (for metrics)."""

    def __init__(self, ofa, max_batch: int = 8, max_wait_ms: float = 10.0, queue_size: int = 64,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.ofa = ofa
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.on_batch = on_batch
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # ---- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="openofa-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            for job in self._jobs:
                job.future.cancel()
            self._jobs.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop

    @property
    def depth(self) -> int:
        """Requests waiting for a model call."""
        return sum(1 for j in list(self._jobs) if not j.future.cancelled())

    # ---- requests ------------------------------------------------------------------------------
    def submit(self, task: str, inputs: dict[str, Any], options: dict[str, Any] | None = None) -> Future:
        """Queue one input of ``task``; its future gives ``(result, batch_size)`` or raises the
        input's :class:`OFAError`."""
        options = dict(options or {})
        job = Job(task, inputs, options, task + json.dumps(options, sort_keys=True, default=str))
        with self._cond:
            if self._stop:
                raise QueueFull("the service is shutting down")
            if len(self._jobs) >= self.queue_size:  # requests whose callers gave up free their places
                self._jobs = collections.deque(j for j in self._jobs if not j.future.cancelled())
            if len(self._jobs) >= self.queue_size:
                raise QueueFull(f"{len(self._jobs)} requests are waiting already")
            self._jobs.append(job)
            self._cond.notify_all()
        return job.future

    # ---- the worker ----------------------------------------------------------------------------
    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._jobs and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            first = self._jobs[0]
            deadline = first.arrived + self.max_wait
            while not self._stop:
                alike = sum(1 for j in self._jobs if j.key == first.key)
                left = deadline - time.monotonic()
                if alike >= self.max_batch or left <= 0:
                    break
                self._cond.wait(left)
            batch, rest = [], collections.deque()
            for job in self._jobs:
                if job.key == first.key and len(batch) < self.max_batch:
                    batch.append(job)
                else:
                    rest.append(job)
            self._jobs = rest
        return [j for j in batch if j.future.set_running_or_notify_cancel()]

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        start = time.monotonic()
        try:
            results = dict(self.ofa.stream(batch[0].task, [j.inputs for j in batch], batch_size=len(batch),
                                           skip_bad=True, **batch[0].options))
        except Exception as e:  # an error of the whole call (a bad option): every request gets it
            for job in batch:
                job.future.set_exception(e)
            return
        finally:
            if self.on_batch is not None:
                self.on_batch(len(batch), time.monotonic() - start)
        for i, job in enumerate(batch):
            res = results.get(i)
            if isinstance(res, Exception):
                job.future.set_exception(res)
            elif res is None:
                job.future.set_exception(OFAError("no result"))
            else:
                job.future.set_result((res, len(batch)))
