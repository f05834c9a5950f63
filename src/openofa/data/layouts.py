"""Which column holds what: the original's TSV layouts and the default ``--selected-cols`` of
its training scripts, per task, plus each task's official finetuning settings.

Every task has an ordered list of *fields*. The original's ``--selected-cols`` string lists
column numbers in exactly that order (``caption``: ``0,4,2`` = id, image, caption), so a
selection can be given the original way (``"0,4,2"`` or ``[0, 4, 2]``) or by name
(``"image=4,caption=2"`` / ``{"image": 4, "caption": 2}``, merged over the defaults). The
JSONL format uses the same field names as keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

from openofa.errors import OFAError

__all__ = ["TaskLayout", "TASK_LAYOUTS", "TASK_ALIASES", "GLUE_TASKS", "PRETRAIN_TASKS", "canonical_task",
           "get_layout", "resolve_columns"]

GLUE_TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2")
PRETRAIN_TASKS = ("pretrain_vl", "pretrain_text", "pretrain_image", "pretrain_detection")


@dataclass(frozen=True)
class TaskLayout:
    """``fields`` in the original's selected-column order, ``columns`` the default column of
    each, ``optional`` the fields a row may lack (a missing trailing column is not an error),
    and the official finetuning settings used when :func:`build_dataset` is not told."""

    task: str
    fields: tuple[str, ...]
    columns: tuple[int, ...]
    optional: frozenset = frozenset()
    image: bool = True
    patch_image_size: int | None = 480
    max_src_length: int = 80
    max_tgt_length: int = 20
    settings: Mapping[str, object] = field(default_factory=dict)
    doc: str = ""

    def default_columns(self) -> dict[str, int]:
        return dict(zip(self.fields, self.columns))


def _L(task, fields, columns, **kw) -> TaskLayout:
    kw["optional"] = frozenset(kw.get("optional", ()))
    return TaskLayout(task, tuple(fields), tuple(columns), **kw)


TASK_LAYOUTS: dict[str, TaskLayout] = {
    # caption_{stage1_train,stage2_train,val,test}.tsv:
    #   uniq-id, image-id, caption ("a&&b&&..." in val/test), predicted object labels, image base64
    "caption": _L("caption", ["id", "image", "caption"], [0, 4, 2],
                  max_src_length=80, max_tgt_length=20, patch_image_size=480,
                  doc="uniq-id, image-id, caption(s joined by &&), VinVL object labels, image"),
    # vqa_{train,val,test}.tsv: question-id, image-id, question, answers "conf|!+ans&&...",
    #   predicted object labels "a&&b", image base64 (, caption: unused)
    "vqa": _L("vqa", ["id", "image", "question", "answers", "objects"], [0, 5, 2, 3, 4],
              optional=["objects"], max_src_length=80, max_tgt_length=30, patch_image_size=480,
              settings={"max_object_length": 30, "add_object": True, "prompt_type": "prev_output"},
              doc="question-id, image-id, question, conf|!+answer&&..., object labels a&&b, image"),
    # refcoco{,+,g}_{train,val,testA,testB,test}.tsv: uniq-id, image-id, text, "x1,y1,x2,y2", image
    "ground": _L("ground", ["id", "image", "text", "box"], [0, 4, 2, 3],
                 max_src_length=80, max_tgt_length=20, patch_image_size=512,
                 settings={"max_image_size": 512},
                 doc="uniq-id, image-id, referring expression, box x1,y1,x2,y2, image"),
    # snli_ve_{train,dev,test}.tsv: uniq-id, image-id, image, hypothesis, caption (premise), label
    "entail": _L("entail", ["id", "image", "hypothesis", "premise", "label"], [0, 2, 3, 4, 5],
                 max_src_length=80, max_tgt_length=20, patch_image_size=480,
                 settings={"prompt_type": "prev_output"},
                 doc="uniq-id, image-id, image, hypothesis, premise caption, "
                     "label (entailment|neutral|contradiction)"),
    # imagenet_1k_{train,val}.tsv: image base64, label index (1-based), synset words
    "classify": _L("classify", ["image", "label"], [0, 2],
                   max_src_length=128, max_tgt_length=30, patch_image_size=480,
                   settings={"imagenet_default_mean_and_std": True},
                   doc="image, class index (1-based), class name (synset words)"),
    # gigaword_{train,dev,test}.tsv: source article, target summary
    "summarize": _L("summarize", ["text", "summary"], [0, 1], image=False, patch_image_size=None,
                    max_src_length=512, max_tgt_length=64, settings={"noise_ratio": 0.0},
                    doc="source text, summary"),
    # GLUE, the columns of the files the original distributes (glue_data/*_{train,dev}.tsv)
    "cola": _L("cola", ["sentence", "label"], [1, 2], image=False, patch_image_size=None,
               max_src_length=512, max_tgt_length=30, settings={"prompt_type": "src"},
               doc="column 1 sentence, column 2 label 0|1"),
    "sst2": _L("sst2", ["sentence", "label"], [0, 1], image=False, patch_image_size=None,
               max_src_length=512, max_tgt_length=30, settings={"prompt_type": "src"},
               doc="sentence, label 0|1"),
    "mnli": _L("mnli", ["sentence1", "sentence2", "label"], [0, 1, 2], image=False, patch_image_size=None,
               max_src_length=512, max_tgt_length=30, settings={"prompt_type": "src"},
               doc="premise, hypothesis, label 0 (neutral) | 1 (entailment) | 2 (contradiction)"),
    "mrpc": _L("mrpc", ["sentence1", "sentence2", "label"], [0, 1, 2], image=False, patch_image_size=None,
               max_src_length=512, max_tgt_length=30, settings={"prompt_type": "src"},
               doc="sentence1, sentence2, label 0|1"),
    "qnli": _L("qnli", ["question", "sentence", "label"], [1, 2, 3], image=False, patch_image_size=None,
               max_src_length=512, max_tgt_length=30, settings={"prompt_type": "src"},
               doc="index, question, sentence, label entailment|not_entailment (or 1|0)"),
    "qqp": _L("qqp", ["question1", "question2", "label"], [3, 4, 5], image=False, patch_image_size=None,
              max_src_length=512, max_tgt_length=30, settings={"prompt_type": "src"},
              doc="id, qid1, qid2, question1, question2, label 0|1"),
    "rte": _L("rte", ["sentence1", "sentence2", "label"], [1, 2, 3], image=False, patch_image_size=None,
              max_src_length=512, max_tgt_length=30, settings={"prompt_type": "src"},
              doc="index, sentence1, sentence2, label entailment|not_entailment"),
    # The four pretraining files of the original (read only; no sample builder here).
    "pretrain_vl": _L("pretrain_vl", ["id", "image", "caption", "question", "answers", "objects", "dataset",
                                      "type"], [0, 1, 2, 3, 4, 5, 6, 7], patch_image_size=384,
                      max_src_length=80, max_tgt_length=30,
                      doc="uniq-id, image, caption, question, answer (conf|!+ans&&... for qa, "
                          "x1,y1,x2,y2 for visual_grounding), ground-truth objects a&&b, dataset "
                          "name, type caption|qa|visual_grounding"),
    "pretrain_text": _L("pretrain_text", ["id", "text"], [0, 1], image=False, patch_image_size=None,
                        doc="uniq-id, text"),
    "pretrain_image": _L("pretrain_image", ["id", "image", "code"], [0, 1, 2], patch_image_size=256,
                         doc="image-id, image (256x256), VQGAN codes of the centre (space-separated ints)"),
    "pretrain_detection": _L("pretrain_detection", ["id", "image", "objects"], [0, 1, 2], patch_image_size=256,
                             doc="image-id, image, boxes x1,y1,x2,y2,category-id,category-name&&..."),
}

#: other names accepted for a task (the original's task names and dataset names)
TASK_ALIASES = {
    "refcoco": "ground", "refcocoplus": "ground", "refcocog": "ground", "grounding": "ground",
    "snli_ve": "entail", "snli-ve": "entail", "entailment": "entail", "visual_entailment": "entail",
    "vqa_gen": "vqa", "image_classify": "classify", "imagenet": "classify",
    "gigaword": "summarize", "summary": "summarize", "caption_stage1": "caption",
    "sst-2": "sst2", "sst_2": "sst2",
    "vision_language": "pretrain_vl", "text": "pretrain_text", "image": "pretrain_image",
    "detection": "pretrain_detection",
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
            from openofa.data.tsv import parse_columns

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


def _check_index(idx: object, name: str) -> int:
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise OFAError(f"column of {name!r} must be a non-negative integer, got {idx!r}")
    return idx
