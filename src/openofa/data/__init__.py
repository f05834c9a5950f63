"""Training and evaluation data: the original's TSV layouts and a plain JSONL format, read
lazily through a byte-offset index, turned into the samples and batches the original's
datasets produce. See ``docs/data.md``.

* :func:`build_dataset` (samples, :class:`OFADataset`), :func:`collate` (batches)
* :func:`open_records` (plain :class:`Record` rows, any task and the pretraining files)
* :func:`load_references` / :func:`reference` (evaluation references)
* :class:`IterableShards` (rows split over DataLoader workers), :func:`shard_range`
"""

from openofa.data.collate import Skipped, collate, pad_sequences
from openofa.data.dataset import (
    IterableShards,
    OFADataset,
    RecordReader,
    SkipLog,
    build_dataset,
    find_data_file,
    load_references,
    open_records,
    resolve_shard,
)
from openofa.data.layouts import GLUE_TASKS, TASK_LAYOUTS, PRETRAIN_TASKS, TASK_ALIASES, canonical_task, resolve_columns
from openofa.data.lines import LineFile, LineIndex, shard_range, split_range
from openofa.data.records import BAD_ROW_KINDS, BadRow, Record
from openofa.data.samples import SampleBuilder, make_builder, reference

__all__ = [
    "build_dataset",
    "open_records",
    "load_references",
    "reference",
    "collate",
    "pad_sequences",
    "OFADataset",
    "RecordReader",
    "IterableShards",
    "SampleBuilder",
    "make_builder",
    "Record",
    "BadRow",
    "BAD_ROW_KINDS",
    "Skipped",
    "SkipLog",
    "LineIndex",
    "LineFile",
    "shard_range",
    "split_range",
    "resolve_shard",
    "find_data_file",
    "resolve_columns",
    "canonical_task",
    "TASK_LAYOUTS",
    "TASK_ALIASES",
    "GLUE_TASKS",
    "PRETRAIN_TASKS",
]
