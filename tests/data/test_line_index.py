"""Lazy access: a byte-offset index built in one chunked pass, one seek per item."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from openofa.data import LineFile, LineIndex, build_dataset
from openofa.data import lines as lines_module

N_ROWS = 2400
ROW_BYTES = 2000


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "gigaword_train.tsv"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(N_ROWS):
            body = f"article {i} " + "x" * (ROW_BYTES - 40)
            fh.write(f"{body}\tsummary {i}\n")
    return path  # about 4.8 MB


class _SpyHandle:
    """Wraps a binary file handle, recording seeks and bytes read."""

    def __init__(self, fh):
        self.fh, self.seeks, self.read_bytes = fh, [], 0

    def seek(self, offset, whence=0):
        self.seeks.append(offset)
        return self.fh.seek(offset, whence)

    def readline(self, *a):
        line = self.fh.readline(*a)
        self.read_bytes += len(line)
        return line

    def close(self):
        self.fh.close()


def test_index_is_int64_offsets_built_in_chunks(big_file):
    size = big_file.stat().st_size
    tracemalloc.start()
    index = LineIndex.build(big_file, chunk_size=1 << 16)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < size // 8, f"index build used {peak} bytes for a {size}-byte file"
    assert isinstance(index.offsets, np.ndarray) and index.offsets.dtype == np.int64
    assert len(index) == N_ROWS and index.linenos is None
    with open(big_file, "rb") as fh:
        fh.seek(int(index.offsets[1000]))
        assert fh.readline().startswith(b"article 1000 ")


def test_item_1000_is_one_seek_and_one_line(big_file):
    ds = build_dataset("summarize", big_file, shard=None)
    lf: LineFile = ds.file
    spy = _SpyHandle(lf._handle())
    lf._fh = spy
    tracemalloc.start()
    sample = ds[1000]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sample["ref"] == "summary 1000" and sample["id"] == 1000
    assert spy.seeks == [int(lf.index.offsets[1000])]
    assert spy.read_bytes < 2 * ROW_BYTES
    assert peak < big_file.stat().st_size // 8


def test_index_cache_next_to_the_file(tmp_path, monkeypatch):
    f = tmp_path / "t.tsv"
    f.write_text("a\tb\n\nc\td\n")
    first = LineFile(f, cache_index=True)
    cache = LineIndex.cache_path(f)
    assert cache.is_file() and first.index.linenos.tolist() == [1, 3]

    def no_build(*a, **k):
        raise AssertionError("index rebuilt although the cache is valid")

    monkeypatch.setattr(lines_module.LineIndex, "build", classmethod(no_build))
    again = LineFile(f, cache_index=True)
    assert again.index.offsets.tolist() == first.index.offsets.tolist() and again[1] == ("c\td", 3)
    monkeypatch.undo()
    f.write_text("a\tb\nc\td\ne\tf\n")  # changed file: size differs, the cache is not used
    assert len(LineFile(f, cache_index=True)) == 3


def test_edge_cases(tmp_path):
    f = tmp_path / "e.tsv"
    f.write_bytes(b"")
    assert len(LineIndex.build(f)) == 0
    f.write_bytes(b"\n\r\n\n")
    assert len(LineIndex.build(f)) == 0
    first = "ünï\tcode\r\n".encode()
    f.write_bytes(first + b"last")
    for chunk in (1, 2, 3, 1 << 20):  # "\r\n" and multi-byte characters split across chunks
        idx = LineIndex.build(f, chunk_size=chunk)
        assert idx.offsets.tolist() == [0, len(first)] and idx.linenos is None
    lf = LineFile(f)
    assert lf[0] == ("ünï\tcode", 1) and lf[1] == ("last", 2) and lf[-1] == ("last", 2)
    with pytest.raises(IndexError):
        lf[2]
