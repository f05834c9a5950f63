"""One small module per task; :data:`TASKS` maps CLI names to them."""

from openofa.tasks.base import Example, Task
from openofa.tasks.caption import Caption
from openofa.tasks.classify import ImageClassification
from openofa.tasks.entailment import Entailment
from openofa.tasks.grounding import Grounding
from openofa.tasks.summarize import Summarize
from openofa.tasks.text_classification import TextClassification
from openofa.tasks.vqa import VQA

TASKS: dict[str, type[Task]] = {t.name: t for t in (Caption, VQA, Grounding, Entailment, ImageClassification,
                                                      TextClassification, Summarize)}

__all__ = ["Example", "Task", "TASKS", "Caption", "VQA", "Grounding", "Entailment", "ImageClassification",
           "TextClassification", "Summarize"]
