"""Map-style datasets over the byte-offset index of a TSV or JSONL file.

* :func:`open_records` -> :class:`RecordReader`: one :class:`~openofa.data.records.Record`
  per row, for every task including the four pretraining files.
* :func:`build_dataset` -> :class:`OFADataset`: one training/evaluation sample per row,
  batched by :meth:`OFADataset.collater` (:func:`~openofa.data.collate.collate`).
* :class:`IterableShards`: the rows of a dataset split over DataLoader workers.
* :func:`load_references`: the evaluation references of a file, by id.

**Sharding.** Like the original's ``FileDataset``, a dataset only holds the rows of its
distributed rank: ``shard="auto"`` reads the rank and world size from ``torch.distributed``
when it is initialised, else from the ``RANK`` / ``WORLD_SIZE`` environment variables, and
gives each rank one contiguous slice (sizes differ by at most one row). Index ``i`` of the
dataset is row ``start + i`` of the file. Do not add a ``DistributedSampler`` on top (or pass
``shard=None`` and use one). Within a rank, a map-style DataLoader hands each index to one
worker; :class:`IterableShards` splits the rank's rows over workers itself.

**Bad rows.** ``on_error="raise"`` raises the first bad row's :class:`BadRow` (an
:class:`~openofa.errors.OFAError`: ``"file:line: what is wrong"``). ``on_error="skip"``
returns a :class:`~openofa.data.collate.Skipped` marker instead, which the collater drops;
every skip is counted by kind in memory shared with the DataLoader workers, the first few
messages are kept, the first ones of each process are logged as warnings when they happen,
and :meth:`OFADataset.end_epoch` (also called by :meth:`set_epoch`) logs the epoch's totals.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from openofa.data.collate import Skipped, collate
from openofa.data.layouts import ColumnSpec, TaskLayout, get_layout, resolve_columns
from openofa.data.lines import LineFile, shard_range, split_range
from openofa.data.records import BAD_ROW_KINDS, BadRow, Record, fields_from_json, fields_from_tsv, \
    record_from_fields
from openofa.errors import OFAError

__all__ = ["RecordReader", "OFADataset", "IterableShards", "SkipLog", "open_records", "build_dataset",
           "load_references", "resolve_shard", "find_data_file"]

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
_SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}


# ---------------------------------------------------------------------------------------
# where the rows are


def resolve_shard(shard: Any = "auto") -> tuple[int, int]:
    """``(rank, world_size)`` from ``"auto"`` (torch.distributed, else RANK/WORLD_SIZE),
    ``None`` (no sharding) or an explicit pair."""
    if shard is None or shard is False:
        return 0, 1
    if shard == "auto":
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return dist.get_rank(), dist.get_world_size()
        except Exception:  # pragma: no cover - a broken distributed setup reads as single process
            pass
        try:
            rank = int(os.environ.get("RANK", "0"))
            world = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            raise OFAError(f"RANK / WORLD_SIZE must be integers, got {os.environ.get('RANK')!r} / "
                           f"{os.environ.get('WORLD_SIZE')!r}") from None
        shard = (rank, world)
    try:
        rank, world = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise OFAError(f"shard must be 'auto', None or (rank, world_size), got {shard!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise OFAError(f"bad shard: rank {rank} of world size {world}")
    return rank, world


def find_data_file(path: str | Path, split: str = "train", format: str | None = None) -> tuple[Path, str]:
    """``(file, "tsv"|"jsonl")``: ``path`` itself, or in a folder ``<split>.jsonl`` /
    ``<split>.tsv`` (``valid`` also as ``val`` / ``dev``)."""
    path = Path(path)
    if path.is_dir():
        names = _SPLIT_NAMES.get(split, (split,))
        exts = {"jsonl": (".jsonl",), "tsv": (".tsv",)}.get(format or "", (".jsonl", ".tsv"))
        for name in names:
            for ext in exts:
                if (path / (name + ext)).is_file():
                    return find_data_file(path / (name + ext), split, format)
        raise OFAError(f"no {' or '.join(n + e for n in names for e in exts)} in folder {path}")
    if not path.exists():
        raise OFAError(f"data file not found: {path}")
    if format is None:
        suffix = path.suffix.lower()
        format = "jsonl" if suffix in (".jsonl", ".json", ".ndjson") else "tsv"
    if format not in ("tsv", "jsonl"):
        raise OFAError(f"format must be 'tsv' or 'jsonl', got {format!r}")
    return path, format


# ---------------------------------------------------------------------------------------
# bad-row bookkeeping shared with DataLoader workers


class SkipLog:
    """Counts of skipped rows by kind, and the first few messages, in shared memory.

    Every process (the main one, each DataLoader worker) writes only its own slot, so no
    locks are needed; the totals are read in the main process.
    """

    SLOTS = 65  # main process + 64 worker slots (worker id modulo 64)
    KEEP = 5
    WIDTH = 400
    WARN_PER_PROCESS = 5

    def __init__(self, name: str = ""):
        self.name = name
        self.counts = torch.zeros(self.SLOTS, len(BAD_ROW_KINDS), dtype=torch.int64).share_memory_()
        self.nmsg = torch.zeros(self.SLOTS, dtype=torch.int64).share_memory_()
        self.msgs = torch.zeros(self.SLOTS, self.KEEP, self.WIDTH, dtype=torch.uint8).share_memory_()
        self._warned = 0
        self._warned_pid = os.getpid()

    @staticmethod
    def _slot() -> int:
        info = torch.utils.data.get_worker_info()
        return 0 if info is None else 1 + info.id % (SkipLog.SLOTS - 1)

    def add(self, kind: str, message: str) -> None:
        slot = self._slot()
        k = BAD_ROW_KINDS.index(kind) if kind in BAD_ROW_KINDS else BAD_ROW_KINDS.index("other")
        self.counts[slot, k] += 1
        n = int(self.nmsg[slot])
        if n < self.KEEP:
            data = message.encode("utf-8")[: self.WIDTH]
            self.msgs[slot, n].zero_()
            if data:
                self.msgs[slot, n, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            self.nmsg[slot] = n + 1
        if self._warned_pid != os.getpid():
            self._warned, self._warned_pid = 0, os.getpid()
        if self._warned < self.WARN_PER_PROCESS:
            self._warned += 1
            logger.warning("skipping bad row: %s", message)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def by_kind(self) -> dict[str, int]:
        per = self.counts.sum(dim=0).tolist()
        return {kind: int(n) for kind, n in zip(BAD_ROW_KINDS, per) if n}

    def messages(self, limit: int | None = None) -> list[str]:
        out = []
        for slot in range(self.SLOTS):
            for j in range(int(self.nmsg[slot])):
                raw = bytes(self.msgs[slot, j].tolist()).rstrip(b"\x00")
                out.append(raw.decode("utf-8", errors="replace"))
        return out[: limit or self.KEEP]

    def summary(self) -> dict[str, Any]:
        return {"skipped": self.total, "by_kind": self.by_kind(), "messages": self.messages()}

    def reset(self) -> None:
        self.counts.zero_()
        self.nmsg.zero_()
        self.msgs.zero_()

    def log(self, epoch: int | None = None) -> dict[str, Any]:
        s = self.summary()
        if s["skipped"]:
            kinds = ", ".join(f"{k}: {n}" for k, n in s["by_kind"].items())
            when = f" in epoch {epoch}" if epoch is not None else ""
            logger.warning("%s: skipped %d bad rows%s (%s); first: %s", self.name, s["skipped"], when, kinds,
                           " | ".join(s["messages"]))
        return s


# ---------------------------------------------------------------------------------------
# datasets


class _RowDataset(torch.utils.data.Dataset):
    """Rows ``[start, stop)`` of one file, with the bad-row policy."""

    def __init__(self, task: str, path: str | Path, *, split: str = "train", format: str | None = None,
                 columns: ColumnSpec | Mapping[str, str] = None, image_root: str | Path | None = None,
                 shard: Any = "auto", on_error: str = "raise", cache_index: bool | str | Path = False,
                 separator: str = "\t", targets: bool = True):
        self.targets = bool(targets)  # False: inference inputs, which may lack the target fields
        if on_error not in ON_ERROR:
            raise OFAError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.layout: TaskLayout = get_layout(task)
        self.task = self.layout.task
        self.split = split
        self.path, self.format = find_data_file(path, split, format)
        self.on_error = on_error
        self.separator = separator
        self.json_keys: dict[str, str] = {}
        self.columns: dict[str, int] | None = None
        if self.format == "tsv":
            self.columns = resolve_columns(self.task, columns)  # type: ignore[arg-type]
            self.image_root = None
        else:
            if columns is not None:
                if not isinstance(columns, Mapping) or not all(isinstance(v, str) for v in columns.values()):
                    raise OFAError("for a JSONL file, columns maps field names to JSON keys, "
                                   "e.g. {'caption': 'sentence'}")
                unknown = set(columns) - set(self.layout.fields)
                if unknown:
                    raise OFAError(f"task {self.task} has no field {sorted(unknown)[0]!r}; "
                                   f"fields: {', '.join(self.layout.fields)}")
                self.json_keys = dict(columns)
            self.image_root = Path(image_root) if image_root is not None else self.path.parent
        self.file = LineFile(self.path, cache_index=cache_index)
        self.rank, self.world_size = resolve_shard(shard)
        self.start, self.stop = shard_range(len(self.file), self.rank, self.world_size)
        self.skips = SkipLog(str(self.path))
        self.epoch = 0

    # -- rows -----------------------------------------------------------------------------

    @property
    def total_rows(self) -> int:
        """Rows in the whole file (all ranks)."""
        return len(self.file)

    def __len__(self) -> int:
        return self.stop - self.start

    def file_row(self, index: int) -> int:
        """Row of the file (0-based, blank lines not counted) behind dataset index ``index``."""
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, int):
            index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} rows")
        return self.start + (index if index >= 0 else index + n)

    def where(self, index: int) -> str:
        return self.file.where(self.file_row(index))

    def record(self, index: int) -> Record:
        """The :class:`Record` at ``index``; a bad row raises :class:`BadRow`."""
        row = self.file_row(index)
        try:
            line, lineno = self.file[row]
        except BadRow:
            raise
        except OFAError as e:
            raise BadRow(str(e), "text") from None
        where = f"{self.path}:{lineno}"
        if self.format == "tsv":
            fields = fields_from_tsv(line, self.columns, self.layout, where, self.separator)
        else:
            fields = fields_from_json(line, self.layout, where)
            if self.json_keys:
                fields = dict(fields)
                for name, key in self.json_keys.items():
                    if key in fields:
                        fields[name] = fields[key]
        return record_from_fields(self.layout, fields, row=row, where=where, image_root=self.image_root,
                                  targets=self.targets)

    def _guard(self, index: int, make: Callable[[int], Any]) -> Any:
        try:
            return make(index)
        except OFAError as e:
            kind = getattr(e, "kind", "other")
            msg = str(e)
            if not msg.startswith(str(self.path)):
                msg = f"{self.where(index)}: {msg}"
                if self.on_error == "raise":
                    raise BadRow(msg, kind) from None
            if self.on_error == "raise":
                raise
            self.skips.add(kind, msg)
            return Skipped(self.where(index), msg, kind)

    # -- epochs and bad rows ----------------------------------------------------------------

    @property
    def skipped(self) -> int:
        """Bad rows skipped so far in this epoch (all DataLoader workers included)."""
        return self.skips.total

    def skip_summary(self) -> dict[str, Any]:
        """``{"skipped": n, "by_kind": {...}, "messages": [first few]}`` for this epoch."""
        return self.skips.summary()

    def end_epoch(self) -> dict[str, Any]:
        """Log the epoch's bad rows (if any), reset the counts, return the summary."""
        s = self.skips.log(self.epoch)
        self.skips.reset()
        return s

    def set_epoch(self, epoch: int) -> None:
        if self.skips.total:
            self.end_epoch()
        self.epoch = epoch

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.task!r}, file={str(self.path)!r}, format={self.format!r}, "
                f"rows={len(self)} of {self.total_rows}, rank={self.rank}/{self.world_size})")


class RecordReader(_RowDataset):
    """``reader[i]`` is the :class:`Record` of row ``i`` of this rank (or a ``Skipped``
    marker for a bad row with ``on_error="skip"``). Iterating skips the bad rows."""

    def __getitem__(self, index: int) -> Record | Skipped:
        return self._guard(index, self.record)

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self)):
            item = self[i]
            if not isinstance(item, Skipped):
                yield item


class OFADataset(_RowDataset):
    """``dataset[i]`` is the training/evaluation sample of row ``i`` of this rank (see
    :mod:`openofa.data.samples`); batch with :meth:`collater`."""

    def __init__(self, task: str, path: str | Path, builder, **kw):
        super().__init__(task, path, **kw)
        self.builder = builder
        self.pad = builder.pad

    def sample(self, index: int) -> dict[str, Any]:
        return self.builder(self.record(index))

    def __getitem__(self, index: int) -> dict[str, Any] | Skipped:
        return self._guard(index, self.sample)

    def collater(self, samples) -> dict[str, Any]:
        return collate(samples, pad=self.pad)

    def references(self) -> dict[Any, Any]:
        """``{id: reference}`` of this rank's rows (bad rows follow ``on_error``)."""
        from openofa.data.samples import reference

        out = {}
        for i in range(len(self)):
            rec = self._guard(i, self.record)
            if not isinstance(rec, Skipped):
                out[rec.id] = reference(self.task, rec)
        return out


class IterableShards(torch.utils.data.IterableDataset):
    """The rows of ``dataset`` (already this rank's) split over DataLoader workers: worker
    ``w`` of ``n`` reads the contiguous slice ``w`` of the (optionally shuffled) order, so the
    workers of all ranks together read every row of the file exactly once per epoch."""

    def __init__(self, dataset: torch.utils.data.Dataset, *, shuffle: bool = False, seed: int = 0):
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def indices(self, worker: int = 0, num_workers: int = 1) -> list[int]:
        n = len(self.dataset)
        start, stop = split_range(n, worker, num_workers)
        if not self.shuffle:
            return list(range(start, stop))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(n, generator=g)[start:stop].tolist()

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num = (0, 1) if info is None else (info.id, info.num_workers)
        for i in self.indices(worker, num):
            yield self.dataset[i]


# ---------------------------------------------------------------------------------------
# entry points


def open_records(task: str, path: str | Path, *, split: str = "train", columns: ColumnSpec = None,
                 on_error: str = "raise", format: str | None = None, image_root: str | Path | None = None,
                 shard: Any = None, cache_index: bool | str | Path = False, targets: bool = True) -> RecordReader:
    """Rows of a TSV/JSONL file as :class:`Record` objects (any task, pretraining files too).
    Not sharded unless ``shard`` says so. ``targets=False``: rows may lack the fields only
    training and evaluation need (answers, boxes, labels: the inputs of ``ofa <task> FILE``)."""
    return RecordReader(task, path, split=split, format=format, columns=columns, image_root=image_root,
                        shard=shard, on_error=on_error, cache_index=cache_index, targets=targets)


def build_dataset(task: str, path: str | Path, *, split: str = "train", tokenizer=None,
                  patch_image_size: int | None = None, max_src_length: int | None = None,
                  max_tgt_length: int | None = None, columns: ColumnSpec = None, on_error: str = "raise",
                  format: str | None = None, image_root: str | Path | None = None, shard: Any = "auto",
                  cache_index: bool | str | Path = False, **options) -> OFADataset:
    """A map-style dataset of training/evaluation samples for ``task``.

    ``path``: a TSV in the original layout, a JSONL file, or a folder holding
    ``<split>.jsonl`` / ``<split>.tsv``. ``tokenizer``: an ``OFATokenizer`` or ``"en"`` /
    ``"zh"`` (default English). Sizes and lengths default to the original's finetuning
    scripts for the task. ``columns``: the TSV column selection (``"0,4,2"``, ``[0, 4, 2]``,
    ``"image=4"`` or ``{"image": 4}``), or for JSONL ``{field: json_key}``.
    ``on_error``: ``"raise"`` or ``"skip"``. ``shard``: ``"auto"``, ``None`` or
    ``(rank, world_size)``. ``cache_index``: keep the line index next to the file
    (``True``) or at a given path.

    Task options (``**options``): ``prompt_type`` (vqa, entail, GLUE: ``none`` | ``src`` |
    ``prev_output``), ``add_object`` / ``max_object_length`` / ``attend_box`` (vqa: pass a row's
    optional box to the batch, default on), ``add_caption``
    (entail), ``imagenet_default_mean_and_std``, ``scst`` (caption), ``noise_ratio``
    (summarize), ``num_bins`` / ``max_image_size`` (ground), ``train_augment`` (classify and the
    pretraining files: random augmentation in the training split, default on),
    ``image_transform`` (a callable PIL image -> tensor replacing the task's transform; not
    for grounding, whose box follows the resize), ``ans2label_file`` / ``ans2label_dict``
    (vqa, entail, classify, GLUE: a closed candidate answer list, see
    :mod:`openofa.data.answers`; samples then carry a ``constraint_mask``), ``neg_sample_dir``
    (pretrain_vl: negatives for image-text matching), ``mask_ratio`` / ``poisson_lambda`` /
    ``random_ratio`` (pretrain_text: the span masking; see :mod:`openofa.data.pretrain`),
    ``image_cache`` (a :class:`openofa.data.image_cache.DecodedImages` keeping decoded image
    files in memory).
    """
    from openofa.data.samples import SampleBuilder, make_builder

    allowed = set(inspect.signature(SampleBuilder.__init__).parameters) - {"self", "layout", "tokenizer"}
    unknown = set(options) - allowed
    if unknown:
        raise OFAError(f"build_dataset: unknown option {sorted(unknown)[0]!r}; "
                       f"expected one of {', '.join(sorted(allowed - {'split'}))}")
    builder = make_builder(task, tokenizer, split=split, patch_image_size=patch_image_size,
                           max_src_length=max_src_length, max_tgt_length=max_tgt_length, **options)
    return OFADataset(task, path, builder, split=split, format=format, columns=columns, image_root=image_root,
                      shard=shard, on_error=on_error, cache_index=cache_index)


def load_references(task: str, path: str | Path, *, split: str = "valid", columns: ColumnSpec = None,
                    on_error: str = "raise", format: str | None = None, shard: Any = None) -> dict[Any, Any]:
    """``{id: reference}`` for every row of an evaluation file (see
    :func:`openofa.data.samples.reference`); images are not decoded."""
    from openofa.data.samples import reference

    reader = open_records(task, path, split=split, columns=columns, on_error=on_error, format=format,
                          shard=shard)
    refs = {rec.id: reference(reader.task, rec) for rec in reader}
    reader.end_epoch()
    return refs
