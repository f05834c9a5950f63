"""ROUGE for summarization, as OFA's Gigaword evaluation computes it.

OFA (``run_scripts/gigaword/eval_rouge.py``, and ``GigawordTask.valid_step``) uses Google's
``rouge_score`` package through ``datasets``' ``rouge`` metric with ``use_stemmer=True``, one
reference per summary. That is what :func:`rouge_scores` reproduces, not the Perl ROUGE-1.5.5
(``files2rouge``/``pyrouge``):

* tokens: lower-case, every run of characters other than ``a-z0-9`` is a separator (so
  ``don't`` -> ``don t``, ``#`` disappears), words longer than 3 letters Porter-stemmed
  (:mod:`openofa.metrics.porter`, NLTK's default variant);
* ROUGE-N: clipped n-gram overlap, precision over the summary's n-grams, recall over the
  reference's, F1 = 2PR / (P + R) (0 when both are 0);
* ROUGE-L: the sentence-level LCS (``rougeL``, not ``rougeLsum``), same F1;
* the corpus score is the mean of the per-summary F1. This is exactly OFA's validation number;
  ``eval_rouge.py`` prints the "mid" of a 1000-sample bootstrap of that mean (random, not
  seeded), which is the mean up to its resampling noise.

:func:`gigaword_hypothesis` is OFA's post-processing of a generated summary before scoring
(``fix_tokenization`` and ``1`` -> ``#``; the references keep digits as ``#``).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

from openofa.errors import OFAError
from openofa.metrics.porter import stem

__all__ = ["rouge_tokenize", "rouge_n", "rouge_lcs", "rouge_scores", "gigaword_hypothesis"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokenize(text: str, stemmer: bool = True) -> list[str]:
    """``rouge_score``'s default tokenizer."""
    tokens = _NON_ALNUM.sub(" ", text.lower()).split()
    return [stem(t) if stemmer and len(t) > 3 else t for t in tokens]


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def rouge_n(hyp: list[str], ref: list[str], n: int) -> tuple[float, float, float]:
    """(precision, recall, F1) of n-gram overlap between token lists."""
    h = Counter(zip(*(hyp[i:] for i in range(n))))
    r = Counter(zip(*(ref[i:] for i in range(n))))
    overlap = sum(min(c, h[g]) for g, c in r.items())
    p, rec = overlap / max(sum(h.values()), 1), overlap / max(sum(r.values()), 1)
    return p, rec, _f1(p, rec)


def rouge_lcs(hyp: list[str], ref: list[str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of the longest common subsequence."""
    if not hyp or not ref:
        return 0.0, 0.0, 0.0
    prev = [0] * (len(hyp) + 1)
    for x in ref:
        cur = [0]
        for j, y in enumerate(hyp):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    p, r = prev[-1] / len(hyp), prev[-1] / len(ref)
    return p, r, _f1(p, r)


def rouge_scores(hyps: Sequence[str], refs: Sequence[str], *, stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (fractions) of summaries against one reference each:
    ``{"ROUGE-1": .., "ROUGE-2": .., "ROUGE-L": ..}``."""
    if isinstance(hyps, str) or isinstance(refs, str):
        raise OFAError("rouge_scores: give lists of summaries and references")
    if len(hyps) != len(refs):
        raise OFAError(f"rouge_scores: {len(hyps)} summaries but {len(refs)} references")
    if not hyps:
        raise OFAError("rouge_scores: no summaries")
    sums = [0.0, 0.0, 0.0]
    for h, r in zip(hyps, refs):
        if not isinstance(h, str) or not isinstance(r, str):
            raise OFAError("rouge_scores: summaries and references must be strings")
        ht, rt = rouge_tokenize(h, stemmer), rouge_tokenize(r, stemmer)
        sums[0] += rouge_n(ht, rt, 1)[2]
        sums[1] += rouge_n(ht, rt, 2)[2]
        sums[2] += rouge_lcs(ht, rt)[2]
    return {"ROUGE-1": sums[0] / len(hyps), "ROUGE-2": sums[1] / len(hyps), "ROUGE-L": sums[2] / len(hyps)}


# --- OFA's Gigaword post-processing (tasks/nlg_tasks/gigaword.py: fix_tokenization) -----------

_TOK_MAP = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-",
            "[UNK]": "UNK", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _digits(w: str) -> bool:
    return all(c.isdigit() or c == "," for c in w)


def _fix_tokenization(text: str) -> str:
    tokens, out = text.split(), []
    n, i = len(tokens), 0
    left_double = left_single = prev_dash = False
    while i < n:
        tok, dash = tokens[i], False
        nxt = tokens[i + 1] if i + 1 < n else None
        if tok in _TOK_MAP:
            out.append(_TOK_MAP[tok])
            i += 1
        elif tok == '"':
            out.append("''" if left_double else "``")
            left_double = not left_double
            i += 1
        elif tok == "'" and out and out[-1].endswith("n") and nxt == "t":
            out[-1] = out[-1][:-1]
            out.append("n't")
            i += 2
        elif tok == "'" and nxt in ("s", "d", "ll"):
            out.append("'" + nxt)
            i += 2
        elif tok == "'":
            out.append("'" if left_single else "`")
            left_single = not left_single
            i += 1
        elif tok == "." and i < n - 2 and nxt == "." and tokens[i + 2] == ".":
            out.append("...")
            i += 3
        elif tok == "," and out and _digits(out[-1]) and nxt is not None and _digits(nxt):
            out[-1] += "," + nxt  # 3 , 000 -> 3,000
            i += 2
        elif tok == "." and out and out[-1].isdigit() and nxt is not None and nxt.isdigit():
            out[-1] += "." + nxt  # 3 . 03 -> 3.03
            i += 2
        elif (tok == "." and out and len(out[-1]) == 1 and out[-1].isupper() and i < n - 2 and len(nxt) == 1
              and nxt.isupper() and tokens[i + 2] == "."):
            k = i + 3  # U . N . -> U.N. (and, as the original, it moves on by two tokens only)
            while k + 2 < n and len(tokens[k + 1]) == 1 and tokens[k + 1].isupper() and tokens[k + 2] == ".":
                k += 2
            out[-1] += "".join(tokens[i:k])
            i += 2
        elif tok == "-":
            if nxt == "-":
                out.append("--")
                i += 2
            elif i == n - 1 or i == 0:
                out.append("-")
                i += 1
            elif out[-1] not in string.punctuation and nxt[0] not in string.punctuation:
                out[-1] += "-"  # (a substring test against string.punctuation, as the original)
                i += 1
                dash = True
            else:
                out.append("-")
                i += 1
        elif prev_dash and out and tok[0] not in string.punctuation:
            out[-1] += tok
            i += 1
        else:
            out.append(tok)
            i += 1
        prev_dash = dash
    return " ".join(out)


def gigaword_hypothesis(summary: str) -> str:
    """A generated summary as OFA scores it: lower-cased and stripped (as the summarize task
    returns it), OFA's ``fix_tokenization``, then every ``1`` replaced by ``#``."""
    return _fix_tokenization(summary.lower().strip()).replace("1", "#")
