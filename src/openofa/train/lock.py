"""One writer per run folder: a training run holds an exclusive lock on ``<run_dir>/.lock`` while
it writes there, so a second ``ofa train`` into the same folder is refused instead of both
writing every log row and checkpoint. The lock is the operating system's (a POSIX record lock,
``lockf``): a run that is killed, however, releases it, so no stale lock is ever left behind, and
it belongs to the process alone (the data loader's worker processes, which outlive a killed run
for a moment, do not inherit it). Only the first process of a distributed run takes it (its
other processes write nothing there)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

from openofa.errors import OFAError

__all__ = ["run_dir_lock"]


@contextlib.contextmanager
def run_dir_lock(run_dirs: Sequence[str | Path]) -> Iterator[None]:
    """Hold the lock of every folder in ``run_dirs`` (created if needed) while the block runs."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on this platform: no lock
        yield
        return
    if int(os.environ.get("RANK", "0") or 0) != 0:
        yield
        return
    held = []
    try:
        for folder in dict.fromkeys(str(d) for d in run_dirs):
            path = Path(folder)
            try:
                path.mkdir(parents=True, exist_ok=True)
                f = open(path / ".lock", "a+", encoding="utf-8")
            except OSError as e:
                raise OFAError(f"{path}: cannot write the run folder ({e.strerror})") from None
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                owner = f.read().strip() or "unknown"
                f.close()
                raise OFAError(f"{path}: another training run is writing there (pid {owner}); wait for it to "
                               "end or give another --run-dir") from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            held.append(f)
        yield
    finally:
        for f in held:
            f.close()  # closing the file releases its lock
