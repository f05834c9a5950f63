"""The standard metrics of OFA's tasks, in plain Python (no Java). See ``docs/metrics.md``.

Each task (:mod:`openofa.tasks`) names its headline metric and computes it with these functions
(``Task.metric``). Values are fractions (CIDEr-D around 1.4 for a good captioner); the CLI prints
them x100 as OFA does.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from openofa.metrics.accuracy import classification_accuracy, grounding_accuracy, matthews_correlation
from openofa.metrics.caption import caption_scores
from openofa.metrics.detection import detection_scores
from openofa.metrics.ocr import edit_distance, ocr_scores
from openofa.metrics.ptb import coco_tokenize, ptb_tokenize
from openofa.metrics.rouge import gigaword_hypothesis, rouge_scores
from openofa.metrics.vqa import normalize_answer, vqa_accuracy, vqa_ref_score, vqa_score

__all__ = ["caption_scores", "vqa_accuracy", "vqa_score", "vqa_ref_score", "normalize_answer",
           "grounding_accuracy", "classification_accuracy", "matthews_correlation", "rouge_scores",
           "gigaword_hypothesis", "coco_tokenize", "ptb_tokenize", "detection_scores", "vqa_headline",
           "summary_rouge_l", "ocr_scores", "edit_distance"]


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
