"""Random access to the lines of a large text file through a byte-offset index.

One pass over the file (in fixed-size binary chunks, never the whole file at once) records the
byte offset at which every non-blank line starts, as an ``int64`` numpy array. Reading row
``i`` is then one ``seek`` to ``offsets[i]`` and one ``readline``. Blank lines are left out of
the index, but every row keeps its 1-based line number in the file for error messages.

The index can be kept next to the file (``<file>.ofaidx.npz``, reused while the file's size
and modification time are unchanged) so that several ranks or runs do not rescan a 100 GB
file. Each process opens its own file handle on first use, so an indexed file can be handed
to DataLoader workers (fork or spawn).

:func:`shard_range` is the original's split of rows over distributed ranks (contiguous
slices; the first ``total % world`` slices get one row more).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from openofa.errors import OFAError

__all__ = ["LineIndex", "LineFile", "shard_range", "split_range"]

logger = logging.getLogger(__name__)

_NL, _CR = 10, 13
_INDEX_SUFFIX = ".ofaidx.npz"
_INDEX_VERSION = 1


def split_range(total: int, part: int, parts: int) -> tuple[int, int]:
    """``(start, stop)`` of slice ``part`` of ``range(total)`` cut into ``parts`` contiguous
    slices whose sizes differ by at most one (the larger ones first), as the original's
    ``FileDataset`` shards a file over ranks. Every row lands in exactly one slice."""
    if parts < 1 or not 0 <= part < parts:
        raise OFAError(f"shard {part} of {parts} does not exist: need 0 <= shard < count")
    if total < 0:
        raise OFAError(f"row count must be >= 0, got {total}")
    base, extra = divmod(total, parts)
    start = part * base + min(part, extra)
    stop = start + base + (1 if part < extra else 0)
    return start, stop


def shard_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` that distributed ``rank`` of ``world_size`` reads."""
    return split_range(total, rank, world_size)


class LineIndex:
    """Byte offsets (``int64``) of the non-blank lines of a file and their line numbers.

    ``linenos`` is ``None`` when the file has no blank lines (line number = row + 1), so an
    index costs 8 bytes per row in the usual case.
    """

    def __init__(self, offsets: np.ndarray, linenos: np.ndarray | None, size: int, mtime_ns: int):
        self.offsets = offsets
        self.linenos = linenos
        self.size = size
        self.mtime_ns = mtime_ns

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def lineno(self, row: int) -> int:
        return int(self.linenos[row]) if self.linenos is not None else row + 1

    # -- building -------------------------------------------------------------------------

    @classmethod
    def build(cls, path: str | Path, *, chunk_size: int = 1 << 22) -> "LineIndex":
        """Scan ``path`` once, ``chunk_size`` bytes at a time."""
        path = Path(path)
        try:
            st = path.stat()
            fh = path.open("rb", buffering=0)
        except OSError as e:
            raise OFAError(f"cannot read {path}: {e.strerror or e}") from None
        starts: list[np.ndarray] = []  # offsets of all line starts (blank ones too)
        blank_parts: list[np.ndarray] = []  # whether each such line is blank
        pos = 0
        line_start = 0  # offset where the current (unterminated) line began
        prev_last = -1  # last byte of the previous chunk (for "\r\n" split over chunks)
        with fh:
            while True:
                chunk = fh.read(chunk_size)
                if not chunk:
                    break
                buf = np.frombuffer(chunk, dtype=np.uint8)
                nl = np.flatnonzero(buf == _NL).astype(np.int64)
                if nl.size:
                    ends = nl + pos  # absolute offsets of the newlines
                    begins = np.empty_like(ends)
                    begins[0] = line_start
                    begins[1:] = ends[:-1] + 1
                    length = ends - begins
                    blank = length == 0
                    one = np.flatnonzero(length == 1)
                    if one.size:  # a line holding only "\r" is blank too
                        at = ends[one] - 1 - pos
                        before = np.where(at >= 0, buf[np.clip(at, 0, None)], prev_last)
                        blank[one] = before == _CR
                    starts.append(begins)
                    blank_parts.append(blank)
                    line_start = int(ends[-1]) + 1
                prev_last = int(buf[-1])
                pos += len(chunk)
        if line_start < pos:  # last line without a final newline
            tail_blank = pos - line_start == 1 and prev_last == _CR
            starts.append(np.array([line_start], dtype=np.int64))
            blank_parts.append(np.array([tail_blank]))
        all_starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        blank = np.concatenate(blank_parts) if blank_parts else np.zeros(0, dtype=bool)
        if blank.any():
            keep = np.flatnonzero(~blank)
            offsets = np.ascontiguousarray(all_starts[keep], dtype=np.int64)
            linenos = (keep + 1).astype(np.int64)
        else:
            offsets = all_starts.astype(np.int64, copy=False)
            linenos = None
        return cls(offsets, linenos, st.st_size, st.st_mtime_ns)

    # -- caching --------------------------------------------------------------------------

    @staticmethod
    def cache_path(path: str | Path) -> Path:
        path = Path(path)
        return path.with_name(path.name + _INDEX_SUFFIX)

    @classmethod
    def load_or_build(cls, path: str | Path, *, cache: bool | str | Path = False,
                      chunk_size: int = 1 << 22) -> "LineIndex":
        """The index of ``path``; with ``cache`` (True: next to the file, or a path) reuse a
        saved index whose size and mtime match the file, else build and save it."""
        path = Path(path)
        if not cache:
            return cls.build(path, chunk_size=chunk_size)
        cpath = cls.cache_path(path) if cache is True else Path(cache)
        try:
            st = path.stat()
        except OSError as e:
            raise OFAError(f"cannot read {path}: {e.strerror or e}") from None
        if cpath.is_file():
            try:
                with np.load(cpath, allow_pickle=False) as z:
                    meta = z["meta"]
                    if (int(meta[0]) == _INDEX_VERSION and int(meta[1]) == st.st_size
                            and int(meta[2]) == st.st_mtime_ns):
                        linenos = z["linenos"] if int(meta[3]) else None
                        return cls(z["offsets"].astype(np.int64, copy=False), linenos,
                                   st.st_size, st.st_mtime_ns)
            except (OSError, ValueError, KeyError):
                logger.warning("ignoring unreadable index cache %s", cpath)
        index = cls.build(path, chunk_size=chunk_size)
        index.save(cpath)
        return index

    def save(self, cpath: str | Path) -> None:
        """Write the index (atomically); a folder that cannot be written is only logged."""
        cpath = Path(cpath)
        tmp = cpath.with_name(f"{cpath.name}.{os.getpid()}.tmp")
        meta = np.array([_INDEX_VERSION, self.size, self.mtime_ns, self.linenos is not None], dtype=np.int64)
        linenos = self.linenos if self.linenos is not None else np.zeros(0, dtype=np.int64)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, offsets=self.offsets, linenos=linenos, meta=meta)
            os.replace(tmp, cpath)
        except OSError as e:
            logger.warning("could not save the line index to %s: %s", cpath, e.strerror or e)
            try:
                tmp.unlink()
            except OSError:
                pass


class LineFile:
    """Rows of a text file by number: ``lf[i]`` is ``(text, line_number)``.

    The text is decoded as UTF-8 and has its line ending removed. The file handle is opened
    lazily and per process; pickling drops it.
    """

    def __init__(self, path: str | Path, *, index: LineIndex | None = None,
                 cache_index: bool | str | Path = False, chunk_size: int = 1 << 22):
        self.path = Path(path)
        if not self.path.exists():
            raise OFAError(f"data file not found: {self.path}")
        if not self.path.is_file():
            raise OFAError(f"data path is not a file: {self.path}")
        self.index = index if index is not None else LineIndex.load_or_build(
            self.path, cache=cache_index, chunk_size=chunk_size)
        self._fh = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.index)

    def lineno(self, row: int) -> int:
        return self.index.lineno(row)

    def where(self, row: int) -> str:
        return f"{self.path}:{self.lineno(row)}"

    def _handle(self):
        if self._fh is None or self._pid != os.getpid():
            try:
                self._fh = open(self.path, "rb")
            except OSError as e:
                raise OFAError(f"cannot read {self.path}: {e.strerror or e}") from None
            self._pid = os.getpid()
        return self._fh

    def raw(self, row: int) -> bytes:
        """The bytes of row ``row`` without its line ending (one seek, one readline)."""
        n = len(self.index)
        if not -n <= row < n:
            raise IndexError(f"row {row} out of range for {self.path} ({n} rows)")
        if row < 0:
            row += n
        fh = self._handle()
        fh.seek(int(self.index.offsets[row]))
        line = fh.readline()
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line

    def __getitem__(self, row: int) -> tuple[str, int]:
        data = self.raw(row)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise OFAError(f"{self.where(row)}: not valid UTF-8 text (byte {e.start})") from None
        return text, self.lineno(row if row >= 0 else row + len(self))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fh"] = None
        state["_pid"] = None
        return state

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
