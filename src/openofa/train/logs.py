"""Where training numbers go: the console (one line per ``log_every`` updates, with a tqdm bar),
CSV files in the run folder (always) and TensorBoard (when ``tensorboard`` is installed)."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from openofa.train.checkpoint import fsync_dir


class CSVLog:
    """Append rows to a CSV file; the header is the union of the keys seen (the file is rewritten
    when a new key appears). ``truncate_after(update)`` drops rows of updates a resumed run redoes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.reader(f)
                self.columns = next(reader, [])

    def _read(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[Mapping[str, Any]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def write(self, row: Mapping[str, Any]) -> None:
        row = {k: _fmt(v) for k, v in row.items()}
        new = [k for k in row if k not in self.columns]
        if new or not self.path.is_file():
            self.columns += new
            self._rewrite(self._read() + [row])
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)

    def truncate_after(self, update: int) -> None:
        rows = self._read()
        keep = [r for r in rows if _int(r.get("update")) <= update]
        if len(keep) != len(rows):
            self._rewrite(keep)


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


def _fmt(v: Any) -> Any:
    return repr(float(v)) if isinstance(v, float) else v


class TensorBoardLog:
    def __init__(self, folder: str | Path) -> None:
        self.writer = None
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:  # torch's writer needs the real package
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(folder))

    def write(self, prefix: str, step: int, values: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunLog:
    """The three sinks of rank 0 (other ranks get a RunLog that writes nothing)."""

    def __init__(self, run_dir: Path | None, *, tensorboard: bool = True, progress: bool = True) -> None:
        self.active = run_dir is not None
        self.progress = progress and self.active and sys.stderr.isatty()
        self.bar = None
        if not self.active:
            return
        self.train_csv = CSVLog(run_dir / "train_log.csv")
        self.valid_csv = CSVLog(run_dir / "valid_log.csv")
        self.tb = TensorBoardLog(run_dir / "tensorboard") if tensorboard else None

    def echo(self, line: str) -> None:
        if not self.active:
            return
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def open_bar(self, epoch: int, total: int, done: int) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        self.close_bar()
        self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch}", unit="upd", dynamic_ncols=True,
                        leave=False, file=sys.stderr)

    def tick(self, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def train(self, row: Mapping[str, Any]) -> None:
        if not self.active:
            return
        self.train_csv.write(row)
        if self.tb is not None:
            self.tb.write("train", int(row["update"]), row)
        self.echo(" | ".join(_console(k, v) for k, v in row.items()))

    def valid(self, row: Mapping[str, Any]) -> None:
        if not self.active:
            return
        self.valid_csv.write(row)
        if self.tb is not None:
            self.tb.write("valid", int(row["update"]), row)
        self.echo("valid | " + " | ".join(_console(k, v) for k, v in row.items()))

    def truncate_after(self, update: int) -> None:
        if self.active:
            self.train_csv.truncate_after(update)
            self.valid_csv.truncate_after(update)

    def close(self) -> None:
        self.close_bar()
        if self.active and self.tb is not None:
            self.tb.close()


def _console(k: str, v: Any) -> str:
    if isinstance(v, float):
        return f"{k} {v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{k} {v:.3e}"
    return f"{k} {v}"
