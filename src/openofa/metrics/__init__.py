"""The standard metrics of OFA's tasks, in plain Python (no Java). See ``docs/metrics.md``.

:data:`METRICS` maps a task name of :mod:`openofa.tasks` to a function
``(predictions, references) -> float`` computing that task's headline metric from two lists,
and :data:`METRIC_NAMES` gives its name. Values are fractions (CIDEr-D around 1.4 for a good
captioner); the CLI prints them x100 as OFA does.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from openofa.errors import OFAError
from openofa.metrics.accuracy import classification_accuracy, grounding_accuracy, matthews_correlation
from openofa.metrics.caption import caption_scores
from openofa.metrics.ptb import coco_tokenize, ptb_tokenize
from openofa.metrics.rouge import gigaword_hypothesis, rouge_scores
from openofa.metrics.vqa import normalize_answer, vqa_accuracy, vqa_ref_score, vqa_score

__all__ = ["caption_scores", "vqa_accuracy", "vqa_score", "vqa_ref_score", "normalize_answer",
           "grounding_accuracy", "classification_accuracy", "matthews_correlation", "rouge_scores",
           "gigaword_hypothesis", "coco_tokenize", "ptb_tokenize", "METRICS", "METRIC_NAMES"]


def caption_cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """CIDEr-D (coco-caption) of captions against lists of reference captions, in order."""
    if len(predictions) != len(references):
        raise OFAError(f"caption: {len(predictions)} predictions but {len(references)} reference lists")
    return caption_scores(dict(enumerate(predictions)), dict(enumerate(references)))["CIDEr-D"]


def vqa_headline(predictions: Sequence[str], references: Sequence) -> float:
    """VQA accuracy. References that are lists of annotators' answers get the official VQA
    accuracy; references given as OFA's target strings ``"conf|!+answer&&..."`` (or parsed
    ``{answer: conf}`` dicts) get OFA's validation score, the confidence of the predicted answer."""
    if references and all(isinstance(r, (str, Mapping)) for r in references):
        return vqa_ref_score(predictions, references)
    return vqa_accuracy(predictions, references)


def summary_rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """ROUGE-L F1 of generated summaries after OFA's Gigaword post-processing."""
    return rouge_scores([gigaword_hypothesis(p) for p in predictions], references)["ROUGE-L"]


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "caption": caption_cider,
    "vqa": vqa_headline,
    "ground": grounding_accuracy,
    "entail": classification_accuracy,
    "classify": classification_accuracy,
    "classify-text": classification_accuracy,
    "summarize": summary_rouge_l,
}

METRIC_NAMES: dict[str, str] = {
    "caption": "CIDEr-D",
    "vqa": "VQA accuracy",
    "ground": "Acc@0.5",
    "entail": "accuracy",
    "classify": "accuracy",
    "classify-text": "accuracy",
    "summarize": "ROUGE-L",
}
