"""One :class:`Record` per data line, whatever the file format.

A TSV row (the original's layouts) and a JSONL object (the plain format) are both turned into
the same plain fields here, so the sample builders never see the file format:

=========  ==========================================================================
field      meaning
=========  ==========================================================================
id         the row's id (the id column / ``"id"`` key; the row number where there is none)
image      image source: a base64 string (TSV) or a file path (JSONL; then
           ``extra["image_is_path"]`` is True), not yet decoded
text       caption task: unused; VQA: question; grounding: referring expression;
           entailment: hypothesis; summarization: source text; GLUE: the prompt's
           first text (qnli: the sentence); pretraining: caption / text
text2      entailment: premise caption; GLUE: the prompt's second text (qnli: question)
target     caption(s) (``&&``-joined references, as in the original's files) or summary
answers    VQA: ``{answer: confidence}``
objects    VQA: detected object labels; pretraining: ground-truth objects / box names
box        grounding: ``(x1, y1, x2, y2)`` in original image pixels; VQA (optional, JSONL
           ``box``): the object the question is about
label      entailment / classification / GLUE label word (``yes``, ``no``, ``maybe``,
           ``positive``, a class name, ...), after the original's label mapping
where      ``"file:line"`` for messages
extra      anything else (pretraining: dataset name, type, image codes, detection boxes)
=========  ==========================================================================

Everything wrong with a row raises :class:`BadRow` (an :class:`~openofa.errors.OFAError`)
whose message starts with ``file:line:`` and whose ``kind`` says what was wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openofa.tasks.base import TaskLayout
from openofa.errors import OFAError

__all__ = ["Record", "BadRow", "BAD_ROW_KINDS", "parse_answers", "parse_objects", "parse_box_field",
           "parse_detection_objects", "map_label", "read_label", "field_str", "field_text", "field_required",
           "record_from_fields", "fields_from_tsv", "fields_from_json"]

#: categories of bad rows, counted separately
BAD_ROW_KINDS = ("columns", "json", "field", "image", "box", "answers", "label", "text", "other")


class BadRow(OFAError):
    """A data row that cannot be used; the message names the file and line."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind if kind in BAD_ROW_KINDS else "other"

    def __reduce__(self):  # keep ``kind`` across DataLoader worker processes
        return (type(self), (str(self), self.kind))


@dataclass
class Record:
    id: Any
    image: str | None = field(default=None, repr=False)
    text: str | None = None
    text2: str | None = None
    target: str | None = None
    answers: dict[str, float] | None = None
    objects: list[str] | None = None
    box: tuple[float, float, float, float] | None = None
    label: str | None = None
    where: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# field parsers (``where`` is put in front of every message)


def parse_answers(value: Any, where: str = "") -> dict[str, float]:
    """VQA answers: the original's ``"conf|!+answer&&conf|!+answer"``, or (JSONL) a dict
    ``{answer: conf}``, or a list of answers (confidence 1.0 each)."""
    pre = f"{where}: " if where else ""
    out: dict[str, float] = {}
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"{pre}no answers (expected conf|!+answer&&...)", "answers")
        for item in value.split("&&"):
            conf, sep, answer = item.partition("|!+")
            if not sep:
                raise BadRow(f"{pre}bad answer {item[:60]!r}: expected conf|!+answer", "answers")
            try:
                c = float(conf)
            except ValueError:
                raise BadRow(f"{pre}bad answer confidence {conf[:30]!r} in {item[:60]!r}", "answers") from None
            out[answer] = _check_conf(c, answer, pre)
        return out
    if isinstance(value, dict):
        if not value:
            raise BadRow(f"{pre}no answers", "answers")
        for answer, c in value.items():
            if isinstance(c, bool) or not isinstance(c, (int, float)):
                raise BadRow(f"{pre}confidence of answer {answer!r} must be a number, got {c!r:.30}", "answers")
            out[str(answer)] = _check_conf(float(c), answer, pre)
        return out
    if isinstance(value, list):
        if not value or not all(isinstance(a, str) for a in value):
            raise BadRow(f"{pre}answers must be a non-empty list of strings", "answers")
        return {a: 1.0 for a in value}
    raise BadRow(f"{pre}answers must be a string, an object or a list, got {type(value).__name__}", "answers")


def _check_conf(c: float, answer: str, pre: str) -> float:
    if not math.isfinite(c) or c < 0:
        raise BadRow(f"{pre}confidence of answer {answer!r} must be a finite number >= 0, got {c}", "answers")
    return c


def parse_objects(value: Any, where: str = "") -> list[str] | None:
    """Object labels: ``"a&&b"`` (TSV; an empty cell gives ``[""]`` as in the original) or a
    list of strings (JSONL; an empty list gives ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().split("&&")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value) or None
    raise BadRow(f"{where}: objects must be a string 'a&&b' or a list of strings", "field")


def parse_box_field(value: Any, where: str = "") -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` or a list of 4 numbers; finite and ``x1 < x2``, ``y1 < y2``.
    (Whether the box lies inside the image is checked once the image is decoded.)"""
    from openofa.vision.boxes import parse_box

    try:
        if isinstance(value, str):
            box = parse_box(value)
        elif isinstance(value, (list, tuple)) and len(value) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            box = tuple(float(v) for v in value)
        else:
            raise OFAError(f"box must be 'x1,y1,x2,y2' or [x1, y1, x2, y2], got {value!r:.60}")
    except OFAError as e:
        raise BadRow(f"{where}: {e}", "box") from None
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        raise BadRow(f"{where}: box {list(box)} contains a non-finite value", "box")
    if not (x1 < x2 and y1 < y2):
        raise BadRow(f"{where}: box {list(box)} is empty or inverted (need x1 < x2 and y1 < y2)", "box")
    return box  # type: ignore[return-value]


def map_label(task: str, value: Any, where: str = "", table: dict[str, str] | None = None) -> str:
    """The label word the model is trained to output: ``table`` maps the file's labels to words
    (the task's; None: the label is the word itself, as image classification's class names)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRow(f"{where}: label must be a string or an integer, got {value!r:.40}", "label")
    raw = str(value)
    if table is None:
        if not raw.strip():
            raise BadRow(f"{where}: empty label", "label")
        return raw
    word = table.get(raw.strip())
    if word is None:
        known = sorted({k for k in table if k not in table.values()}) + sorted(set(table.values()))
        raise BadRow(f"{where}: unknown {task} label {raw[:40]!r}; expected one of {', '.join(known)}", "label")
    return word


def read_label(fields: dict[str, Any], task: str, table: dict[str, str] | None, where: str,
               required: bool = True) -> str | None:
    """The row's ``label`` field mapped to its word (None when absent and not ``required``)."""
    if fields.get("label") is None and not required:
        return None
    return map_label(task, field_required(fields, "label", where), where, table)


# ---------------------------------------------------------------------------------------
# rows -> fields


def fields_from_tsv(line: str, columns: dict[str, int], layout: TaskLayout, where: str,
                    separator: str = "\t") -> dict[str, str]:
    cells = line.split(separator)
    required = [f for f in columns if f not in layout.optional]
    need = max(columns[f] for f in required) + 1 if required else 0
    if len(cells) < need:
        raise BadRow(f"{where}: expected at least {need} tab-separated columns for task {layout.task} "
                     f"({', '.join(f'{f}={c}' for f, c in columns.items())}), found {len(cells)}", "columns")
    return {f: cells[c] for f, c in columns.items() if c < len(cells)}


def fields_from_json(line: str, layout: TaskLayout, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRow(f"{where}: bad JSON ({e.msg} at column {e.colno})", "json") from None
    if not isinstance(obj, dict):
        raise BadRow(f"{where}: expected a JSON object per line, got {type(obj).__name__}", "json")
    return obj


def field_str(fields: dict[str, Any], name: str, where: str, required: bool = True) -> str | None:
    """A string field (None when absent and not ``required``)."""
    v = fields.get(name)
    if v is None:
        if required:
            raise BadRow(f"{where}: missing field {name!r}", "field")
        return None
    if not isinstance(v, str):
        raise BadRow(f"{where}: field {name!r} must be a string, got {type(v).__name__}", "field")
    return v


def field_text(fields: dict[str, Any], name: str, where: str, required: bool = True) -> str | None:
    """A string field that must not be empty when ``required``."""
    v = field_str(fields, name, where, required)
    if required and not v.strip():
        raise BadRow(f"{where}: field {name!r} is empty", "text")
    return v


def record_from_fields(layout: TaskLayout, fields: dict[str, Any], *, row: int, where: str,
                       image_root: Path | None = None, targets: bool = True) -> Record:
    """Build the :class:`Record` of one row: its id and image here, the rest by the layout's
    reader (the task's). ``image_root`` (JSONL) resolves relative image paths; without it the
    image field is base64 data (TSV). ``targets=False`` (inference inputs): the fields only
    training and evaluation need may be missing."""
    rid = fields.get("id", row)
    if rid is None or (isinstance(rid, str) and not rid.strip() and "id" in layout.fields):
        rid = row
    if not isinstance(rid, (str, int, float)) or isinstance(rid, bool):
        raise BadRow(f"{where}: id must be a string or a number", "field")
    rec = Record(id=rid, where=where)
    if layout.image:
        img = field_str(fields, "image", where)
        if not img.strip():
            raise BadRow(f"{where}: empty image field", "image")
        if image_root is not None:
            p = Path(img)
            rec.image = str(p if p.is_absolute() else image_root / p)
            rec.extra["image_is_path"] = True
        else:
            rec.image = img
    if layout.read is not None:
        layout.read(rec, fields, where, targets)
    return rec


def field_required(fields: dict[str, Any], name: str, where: str) -> Any:
    """A field that must be present (any type)."""
    if fields.get(name) is None:
        raise BadRow(f"{where}: missing field {name!r}", "label" if name == "label" else "field")
    return fields[name]


def read_pretrain_vl(rec: Record, fields: dict[str, Any], where: str, targets: bool = True) -> None:
    """The fields of a row of the original's vision-language pretraining file."""
    kind = field_str(fields, "type", where)
    rec.extra["type"] = kind
    rec.extra["dataset"] = field_str(fields, "dataset", where, required=False)
    rec.text = field_str(fields, "caption", where, required=False)
    rec.text2 = field_str(fields, "question", where, required=False)
    refs = fields.get("answers")
    rec.extra["refs"] = refs
    gt = fields.get("objects")
    rec.objects = parse_objects(gt, where) if gt not in (None, "") else None
    if kind == "qa":
        rec.answers = parse_answers(refs, where)
    elif kind == "visual_grounding":
        rec.box = parse_box_field(refs, where)
    elif kind != "caption":
        raise BadRow(f"{where}: unknown pretraining type {kind!r}; expected caption, qa or visual_grounding",
                     "field")


def parse_detection_objects(rec: Record, value: Any, where: str) -> None:
    """Detection boxes ``'x1,y1,x2,y2,id,name&&...'`` (or JSONL lists) into ``rec.objects`` (names),
    ``rec.extra['boxes']`` and ``rec.extra['category_ids']``."""
    items = value.strip().split("&&") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise BadRow(f"{where}: detection boxes must be 'x1,y1,x2,y2,id,name&&...'", "box")
    boxes, ids, names = [], [], []
    for item in items:
        if isinstance(item, str):
            parts = item.strip().split(",", 5)
        elif isinstance(item, (list, tuple)):
            parts = list(item)
        else:
            parts = []
        if len(parts) != 6:
            raise BadRow(f"{where}: bad detection box {str(item)[:60]!r}: expected x1,y1,x2,y2,id,name", "box")
        try:
            box = tuple(float(v) for v in parts[:4])
        except (TypeError, ValueError):
            raise BadRow(f"{where}: bad detection box {str(item)[:60]!r}: coordinates must be numbers", "box") from None
        boxes.append(box)
        ids.append(str(parts[4]))
        names.append(str(parts[5]))
    rec.objects = names
    rec.extra["boxes"] = boxes
    rec.extra["category_ids"] = ids
