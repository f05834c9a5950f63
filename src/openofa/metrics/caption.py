"""Caption metrics as the COCO caption evaluation (``pycocoevalcap``) computes them.

:func:`caption_scores` tokenizes like coco-caption (:mod:`openofa.metrics.ptb`, references in
one pass and predictions in another, in the order of ``predictions``) and then computes:

* BLEU-1..4 (``Bleu(4)``): corpus BLEU over all images, clipped n-gram counts against the
  references of each image, the "closest" reference length (shorter one on a tie), brevity
  penalty on the corpus lengths, with coco-caption's ``1e-15``/``1e-9`` smoothing constants.
* CIDEr-D (``Cider()``): TF-IDF n-gram vectors (n = 1..4) with document frequencies counted over
  the references of the evaluated images, clipped hypothesis weights, a Gaussian length penalty
  (sigma 6; the "length" is the number of bigrams, as in coco-caption), mean over n, mean over
  references, times 10. Values are around 1.0-1.5 for a good model (OFA prints them x100).
* ROUGE-L (``Rouge()``): LCS precision and recall against each reference, the best precision
  and the best recall combined as an F-measure with beta 1.2, mean over images.

All values are raw (BLEU-4 0.42, CIDEr-D 1.45), not x100. Tokens are split exactly as the
reference does (``str.split()`` for BLEU and CIDEr-D, ``split(" ")`` for ROUGE-L).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Mapping, Sequence

from openofa.errors import OFAError
from openofa.metrics.ptb import coco_tokenize

__all__ = ["caption_scores", "bleu", "cider_d", "document_frequencies", "rouge_l", "tokenize_for_coco"]

_TINY, _SMALL = 1e-15, 1e-9


def _ngrams(words: list[str], n: int = 4) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        counts.update(zip(*(words[i:] for i in range(k))))
    return counts


def bleu(refs: Sequence[Sequence[str]], hyps: Sequence[str], n: int = 4) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n of tokenized ``hyps`` (one per image) against ``refs`` (a list per
    image), and the per-image values (``[k][image]``), as ``pycocoevalcap.bleu.Bleu``."""
    guess_sum, correct_sum = [0] * n, [0] * n
    test_sum = ref_sum = 0
    per_image: list[list[float]] = [[] for _ in range(n)]
    for rs, hyp in zip(refs, hyps):
        words = hyp.split()
        counts = _ngrams(words, n)
        maxref: dict = {}
        lens = []
        for r in rs:
            rw = r.split()
            lens.append(len(rw))
            for g, c in _ngrams(rw, n).items():
                maxref[g] = max(maxref.get(g, 0), c)
        testlen = len(words)
        reflen = min((abs(rl - testlen), rl) for rl in lens)[1]
        guess = [max(0, testlen - k) for k in range(n)]
        correct = [0] * n
        for g, c in counts.items():
            correct[len(g) - 1] += min(maxref.get(g, 0), c)
        test_sum += testlen
        ref_sum += reflen
        for k in range(n):
            guess_sum[k] += guess[k]
            correct_sum[k] += correct[k]
        for k, v in enumerate(_bleu_values(correct, guess, testlen, reflen, n)):
            per_image[k].append(v)
    return _bleu_values(correct_sum, guess_sum, test_sum, ref_sum, n), per_image


def _bleu_values(correct, guess, testlen, reflen, n) -> list[float]:
    out, prod = [], 1.0
    for k in range(n):
        prod *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        out.append(prod ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        out = [v * math.exp(1 - 1 / ratio) for v in out]
    return out


def document_frequencies(refs: Sequence[Sequence[str]], n: int = 4) -> Counter:
    """For every n-gram (n = 1..``n``, tuples of words), the number of images (lists of
    tokenized references) in ``refs`` whose references contain it: CIDEr's document frequency."""
    df: Counter = Counter()
    for rs in refs:
        df.update({g for r in rs for g in _ngrams(r.split(), n)})
    return df


def cider_d(refs: Sequence[Sequence[str]], hyps: Sequence[str], n: int = 4, sigma: float = 6.0, *,
            df: Mapping[tuple, float] | None = None, num_docs: float | None = None) -> tuple[float, list[float]]:
    """CIDEr-D of tokenized ``hyps`` against ``refs``: (mean, per-image scores), as
    ``pycocoevalcap.cider.Cider``, with document frequencies from these references.

    ``df`` and ``num_docs`` replace them with frequencies counted over another corpus of
    ``num_docs`` images (the ``CiderD(df=...)`` of the original's SCST training, whose cached
    files hold exactly these two: ``document_frequency`` and ``ref_len``)."""
    crefs = [[_ngrams(r.split(), n) for r in rs] for rs in refs]
    ctest = [_ngrams(h.split(), n) for h in hyps]
    if df is None:
        df = document_frequencies(refs, n)
    log_n = math.log(float(num_docs if num_docs is not None else len(crefs)))

    def vector(counts: Counter):
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            w = float(tf) * (log_n - math.log(max(1.0, df.get(g, 0.0))))
            vec[k][g] = w
            norm[k] += w * w
            if k == 1:  # coco-caption counts bigrams as the "length"
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for rs, test in zip(crefs, ctest):
        vec, norm, length = vector(test)
        total = [0.0] * n
        for r in rs:
            vr, nr, lr = vector(r)
            penalty = math.exp(-(float(length - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and nr[k] != 0:
                    val /= norm[k] * nr[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(rs) * 10.0)
    return sum(scores) / len(scores), scores


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(refs: Sequence[Sequence[str]], hyps: Sequence[str], beta: float = 1.2) -> tuple[float, list[float]]:
    """ROUGE-L of tokenized ``hyps`` against ``refs``: (mean, per-image scores), as
    ``pycocoevalcap.rouge.Rouge``."""
    scores = []
    for rs, hyp in zip(refs, hyps):
        c = hyp.split(" ")
        prec, rec = [], []
        for r in rs:
            t = r.split(" ")
            lcs = _lcs(t, c)
            prec.append(lcs / len(c))
            rec.append(lcs / len(t))
        p, r = max(prec), max(rec)
        scores.append((1 + beta ** 2) * p * r / (r + beta ** 2 * p) if p != 0 and r != 0 else 0.0)
    return sum(scores) / len(scores), scores


def _check(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> list:
    if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
        raise OFAError("caption_scores: predictions and references must be dicts keyed by image id")
    if not predictions:
        raise OFAError("caption_scores: no predictions")
    missing = [k for k in predictions if k not in references]
    if missing:
        raise OFAError(f"caption_scores: {len(missing)} predicted image(s) have no references (e.g. {missing[0]!r})")
    extra = [k for k in references if k not in predictions]
    if extra:
        raise OFAError(f"caption_scores: {len(extra)} image(s) with references have no prediction (e.g. {extra[0]!r})")
    for k, p in predictions.items():
        if not isinstance(p, str):
            raise OFAError(f"caption_scores: the prediction for image {k!r} must be a string, got {type(p).__name__}")
        refs = references[k]
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise OFAError(f"caption_scores: the references of image {k!r} must be a non-empty list of strings")
    return list(predictions)


def tokenize_for_coco(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]):
    """coco-caption's tokenization of both sides: (ids, tokenized references per image,
    tokenized prediction per image), references in one pass, predictions in another."""
    ids = _check(predictions, references)
    flat = coco_tokenize([r for k in ids for r in references[k]])
    refs, i = [], 0
    for k in ids:
        refs.append(flat[i:i + len(references[k])])
        i += len(references[k])
    return ids, refs, coco_tokenize([predictions[k] for k in ids])


def caption_scores(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                   *, per_image: bool = False) -> dict:
    """coco-caption's BLEU-1..4, CIDEr-D and ROUGE-L (raw values, not x100).

    ``predictions`` maps an image id to one caption, ``references`` the same ids to their
    reference captions. Returns ``{"BLEU-1": .., "BLEU-2": .., "BLEU-3": .., "BLEU-4": ..,
    "CIDEr-D": .., "ROUGE-L": ..}``; with ``per_image=True`` also ``"per_image": {id: {...}}``
    with the same keys (coco-caption's ``imgToEval``). The order of ``predictions`` is the order
    the captions are tokenized in (it matters only for captions ending in an abbreviation).
    """
    ids, refs, hyps = tokenize_for_coco(predictions, references)
    b, b_img = bleu(refs, hyps)
    c, c_img = cider_d(refs, hyps)
    r, r_img = rouge_l(refs, hyps)
    out: dict = {f"BLEU-{k + 1}": b[k] for k in range(4)}
    out["CIDEr-D"] = c
    out["ROUGE-L"] = r
    if per_image:
        out["per_image"] = {
            k: {**{f"BLEU-{n + 1}": b_img[n][i] for n in range(4)}, "CIDEr-D": c_img[i], "ROUGE-L": r_img[i]}
            for i, k in enumerate(ids)}
    return out
