"""Text recognition scores (``ofa eval ocr``), as the original's OCR evaluation computes them:
exact-match accuracy, and ``1 - mean(edit distance / length of the longer string)`` (the
normalised edit distance, NED; 1 is perfect). Both compare the post-processed prediction (spaces
removed) with the normalised reference."""

from __future__ import annotations

from typing import Sequence

from openofa.errors import OFAError

__all__ = ["ocr_scores", "edit_distance"]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of one character each."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``{"accuracy": exact matches / n, "1-NED": 1 - mean normalised edit distance}``."""
    if len(predictions) != len(references):
        raise OFAError(f"ocr: {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise OFAError("ocr: nothing to score")
    exact = sum(p == r for p, r in zip(predictions, references))
    ned = sum(edit_distance(p, r) / max(len(p), len(r), 1) for p, r in zip(predictions, references))
    n = len(predictions)
    return {"accuracy": exact / n, "1-NED": 1.0 - ned / n}
