"""Which column holds what: every data layout the readers know, gathered from the tasks
(:mod:`openofa.tasks`, each task module declares its files) and from the original's pretraining
files (:mod:`openofa.data.pretrain`).

Every layout has an ordered list of *fields*. The original's ``--selected-cols`` string lists
column numbers in exactly that order (``caption``: ``0,4,2`` = id, image, caption), so a
selection can be given the original way (``"0,4,2"`` or ``[0, 4, 2]``) or by name
(``"image=4,caption=2"`` / ``{"image": 4, "caption": 2}``, merged over the defaults). The
JSONL format uses the same field names as keys.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

from openofa.data.pretrain import PRETRAIN_LAYOUTS
from openofa.errors import OFAError
from openofa.tasks import TASKS
from openofa.tasks.base import TaskLayout
from openofa.tasks.text_classification import GLUE_TASKS

__all__ = ["TaskLayout", "TASK_LAYOUTS", "TASK_ALIASES", "GLUE_TASKS", "PRETRAIN_TASKS", "canonical_task",
           "get_layout", "resolve_columns", "parse_columns"]

PRETRAIN_TASKS = tuple(PRETRAIN_LAYOUTS)

#: layout name -> layout: every task's files, then the pretraining files
TASK_LAYOUTS: dict[str, TaskLayout] = {
    **{lay.task: lay for cls in TASKS.values() for lay in cls.layouts},
    **PRETRAIN_LAYOUTS,
}

#: other names accepted for a layout (the original's task and dataset names)
TASK_ALIASES: dict[str, str] = {
    **{alias: cls.layouts[0].task for cls in TASKS.values() if len(cls.layouts) == 1 for alias in cls.aliases},
    **{alias: lay.task for lay in TASK_LAYOUTS.values() for alias in lay.aliases},
}


def canonical_task(task: str) -> str:
    if not isinstance(task, str):
        raise OFAError(f"task must be a name, got {type(task).__name__}")
    name = task.strip().lower()
    name = TASK_ALIASES.get(name, name)
    if name not in TASK_LAYOUTS:
        raise OFAError(f"unknown task {task!r}; expected one of {', '.join(TASK_LAYOUTS)} "
                       f"(or {', '.join(sorted(TASK_ALIASES))})")
    return name


def get_layout(task: str) -> TaskLayout:
    return TASK_LAYOUTS[canonical_task(task)]


ColumnSpec = Union[None, str, Sequence[int], Mapping[str, int]]


def resolve_columns(task: str, columns: ColumnSpec = None) -> dict[str, int]:
    """``{field: column}`` for ``task``: the defaults, or ``columns`` given the original way
    (``"0,4,2"`` / ``[0, 4, 2]``, in the task's field order; trailing optional fields may be
    left out) or by name (``"image=4"`` / ``{"image": 4}``, merged over the defaults)."""
    layout = get_layout(task)
    cols = layout.default_columns()
    if columns is None:
        return cols
    if isinstance(columns, str):
        spec = columns.strip()
        if "=" in spec:
            columns = parse_columns(spec)
        else:
            try:
                columns = [int(c) for c in spec.split(",") if c.strip()]
            except ValueError:
                raise OFAError(f"bad column selection {spec!r}: expected numbers like '0,4,2' "
                               f"or names like 'image=4'") from None
    if isinstance(columns, Mapping):
        for name, idx in columns.items():
            if name not in layout.fields:
                raise OFAError(f"task {layout.task} has no field {name!r}; fields: {', '.join(layout.fields)}")
            cols[name] = _check_index(idx, name)
        return cols
    idxs = [_check_index(c, "column") for c in columns]
    required = [f for f in layout.fields if f not in layout.optional]
    if not len(required) <= len(idxs) <= len(layout.fields):
        raise OFAError(f"task {layout.task} selects {len(layout.fields)} columns "
                       f"({', '.join(layout.fields)}), got {len(idxs)}: {idxs}")
    return dict(zip(layout.fields, idxs))


def parse_columns(spec: str) -> dict[str, int]:
    """``"image=4,text=2"`` -> ``{"image": 4, "text": 2}``."""
    out: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, idx = part.partition("=")
        if not sep or not idx.strip().isdigit():
            raise OFAError(f"bad column spec {part!r}: expected name=index, e.g. image=4")
        out[name.strip()] = int(idx)
    return out


def _check_index(idx: object, name: str) -> int:
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise OFAError(f"column of {name!r} must be a non-negative integer, got {idx!r}")
    return idx
