"""One module per task; :data:`TASKS` maps task names to them (see :mod:`openofa.tasks.base`).

Adding a task is adding one module here and its line in :data:`TASKS` (``docs/design.md``).
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import Example, Field, Task, TaskLayout
from openofa.tasks.caption import Caption
from openofa.tasks.classify import ImageClassification
from openofa.tasks.detect import Detect
from openofa.tasks.entailment import Entailment
from openofa.tasks.grounding import Grounding
from openofa.tasks.imagine import Imagine
from openofa.tasks.infill import Infill
from openofa.tasks.ocr import OCR
from openofa.tasks.summarize import Summarize
from openofa.tasks.text_classification import TextClassification
from openofa.tasks.vqa import VQA

TASKS: dict[str, type[Task]] = {t.name: t for t in (Caption, VQA, Grounding, Entailment, ImageClassification,
                                                      TextClassification, Summarize, Detect, OCR, Imagine,
                                                      Infill)}


def get_task(name: str) -> Task:
    """The task object of a task name or one of its aliases (``refcoco`` -> ``ground``)."""
    key = name.strip().lower() if isinstance(name, str) else name
    for cls in TASKS.values():
        if key == cls.name or key in cls.aliases:
            return cls()
    raise OFAError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")


def find_task(name: str) -> str | None:
    """The registered task a name means: a task's name or alias, or the name of one of its data
    layouts (a GLUE task, ``refcoco``, the original's ``_name`` of a finetuned file); None if none."""
    key = str(name).strip().lower()
    for cls in TASKS.values():
        if key == cls.name or key in cls.aliases or any(key == lay.task or key in lay.aliases for lay in cls.layouts):
            return cls.name
    return None


def task_of_layout(layout: TaskLayout) -> Task:
    """The task whose samples a data layout's rows make."""
    if layout.owner is None:
        raise OFAError(f"{layout.task} rows are pretraining data, not the input of one task")
    return TASKS[layout.owner]()


__all__ = ["Example", "Field", "Task", "TaskLayout", "TASKS", "get_task", "find_task", "task_of_layout", "Caption", "VQA",
           "Grounding", "Entailment", "ImageClassification", "TextClassification", "Summarize", "Detect", "OCR",
           "Imagine", "Infill"]
