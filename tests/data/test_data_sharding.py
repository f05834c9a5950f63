"""Rows split over distributed ranks and DataLoader workers: every row exactly once."""

from __future__ import annotations

import pytest
import torch
from datafiles import write_tsv

from openofa.data import IterableShards, build_dataset, open_records, shard_range, split_range
from openofa.errors import OFAError

ROWS = 23


@pytest.fixture()
def text_file(tmp_path):
    return write_tsv(tmp_path / "text_examples.tsv", [[i, f"text number {i}"] for i in range(ROWS)])


def test_split_range_covers_every_row_once():
    for total in (0, 1, 2, 7, 10, 23, 100):
        for parts in (1, 2, 3, 4, 8):
            slices = [split_range(total, p, parts) for p in range(parts)]
            rows = [r for start, stop in slices for r in range(start, stop)]
            assert rows == list(range(total))
            sizes = [stop - start for start, stop in slices]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert shard_range(7, 0, 2) == (0, 4) and shard_range(7, 1, 2) == (4, 7)  # the original's split
    with pytest.raises(OFAError):
        shard_range(7, 2, 2)


def test_rank_from_environment(text_file, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ds = build_dataset("summarize", write_tsv(text_file.parent / "g.tsv", [[f"t{i}", "s"] for i in range(10)]))
    assert (ds.rank, ds.world_size, ds.start, ds.stop, len(ds)) == (1, 3, 4, 7, 3)
    assert ds[0]["id"] == 4 and ds[-1]["id"] == 6
    with pytest.raises(IndexError):
        ds[3]
    assert len(build_dataset("summarize", ds.path, shard=None)) == 10


def _ids(batches):
    return [int(i) for b in batches for i in b["id"]]


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_ranks_two_workers_iterable(text_file, shuffle):
    seen = []
    for rank in range(2):
        reader = open_records("pretrain_text", text_file, shard=(rank, 2))
        shards = IterableShards(reader, shuffle=shuffle, seed=3)
        shards.set_epoch(1)
        loader = torch.utils.data.DataLoader(shards, batch_size=4, num_workers=2,
                                             collate_fn=lambda recs: {"id": [r.id for r in recs]})
        got = _ids(loader)
        lo, hi = shard_range(ROWS, rank, 2)
        assert sorted(got) == list(range(lo, hi))
        seen += got
    assert sorted(seen) == list(range(ROWS))  # no duplicates, no gaps


def test_two_ranks_two_workers_map_style(tmp_path):
    f = write_tsv(tmp_path / "giga.tsv", [[f"article {i}", f"summary {i}"] for i in range(ROWS)])
    seen = []
    for rank in range(2):
        ds = build_dataset("summarize", f, shard=(rank, 2))
        loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=True, num_workers=2,
                                             collate_fn=ds.collater)
        seen += _ids(loader)
    assert sorted(seen) == list(range(ROWS))


def test_iterable_worker_slices_are_disjoint(text_file):
    shards = IterableShards(open_records("pretrain_text", text_file), shuffle=True, seed=1)
    parts = [shards.indices(w, 4) for w in range(4)]
    assert sorted(i for p in parts for i in p) == list(range(ROWS))
    shards.set_epoch(2)
    assert [shards.indices(w, 4) for w in range(4)] != parts  # a new order each epoch
