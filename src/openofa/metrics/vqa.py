"""VQA accuracy: the official VQA v2 evaluation, and OFA's validation score.

:func:`vqa_accuracy` is ``vqaEval.py`` of the official VQA API (GT-Vision-Lab/VQA,
``PythonEvaluationTools``): the predicted answer is normalized (:func:`normalize_answer`);
when the annotators do not all agree, their answers get the punctuation step only; the
accuracy of a question is the mean, over the 10 ways of leaving one annotator out, of
``min(1, matches among the other 9 / 3)``. It returns a fraction (the official script prints
``100 * mean`` rounded to 2 decimals).

:func:`vqa_ref_score` is what OFA logs as ``vqa_score`` during validation: the confidence of the
predicted answer, as an exact string, in the target column ``"conf|!+answer&&conf|!+answer"``
of its TSV files (0 when absent).
"""

from __future__ import annotations

import re
from typing import Hashable, Mapping, Sequence, Union

from openofa.errors import OFAError

__all__ = ["normalize_answer", "vqa_score", "vqa_accuracy", "parse_ref_dict", "vqa_ref_score"]

# The official table, as it is (its keys with capitals, "Im", "Ive", ..., never match: the text
# is lower-cased first).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
           "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: a period not followed by a digit
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: each mark is deleted when it touches a space (or the
    text has a digit,digit comma anywhere), else replaced by a space; then periods not followed
    by a digit are deleted (at most 32 of them)."""
    out = text
    comma_number = _COMMA_NUMBER.search(text) is not None
    for p in PUNCT:
        if p + " " in text or " " + p in text or comma_number:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=32)  # the official call passes re.UNICODE (32) as the count


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, articles
    dropped, contractions restored (``dont`` -> ``don't``)."""
    words = [NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """A predicted answer as the official evaluation compares it."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """Accuracy of one predicted answer against the annotators' ``answers`` (10 in VQA v2)."""
    if isinstance(answers, str) or not answers:
        raise OFAError("vqa_score: answers must be a non-empty list of the annotators' answers")
    pred = normalize_answer(prediction)
    gts = list(answers)
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    accs = []
    for i in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != i and a == pred)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs)


Keyed = Union[Sequence, Mapping[Hashable, object]]


def _pairs(predictions: Keyed, references: Keyed, what: str) -> list[tuple]:
    if isinstance(predictions, Mapping) != isinstance(references, Mapping):
        raise OFAError(f"{what}: give predictions and references both as lists or both as dicts")
    if isinstance(predictions, Mapping):
        missing = [k for k in predictions if k not in references]
        if missing:
            raise OFAError(f"{what}: {len(missing)} question(s) have no reference (e.g. {missing[0]!r})")
        pairs = [(predictions[k], references[k]) for k in predictions]
    else:
        if len(predictions) != len(references):
            raise OFAError(f"{what}: {len(predictions)} predictions but {len(references)} references")
        pairs = list(zip(predictions, references))
    if not pairs:
        raise OFAError(f"{what}: no predictions")
    for p, _ in pairs:
        if not isinstance(p, str):
            raise OFAError(f"{what}: predictions must be strings, got {type(p).__name__}")
    return pairs


def vqa_accuracy(predictions: Keyed, answers_per_question: Keyed) -> float:
    """Mean official VQA accuracy (a fraction). Lists in the same order, or dicts keyed by
    question id (every predicted question must have answers)."""
    return _mean(vqa_score(p, a) for p, a in _pairs(predictions, answers_per_question, "vqa_accuracy"))


def parse_ref_dict(text: str) -> dict[str, float]:
    """``"1.0|!+no&&0.3|!+yes"`` -> ``{"no": 1.0, "yes": 0.3}`` (OFA's VQA target column)."""
    out = {}
    for item in text.split("&&"):
        conf, sep, answer = item.partition("|!+")
        try:
            out[answer] = float(conf)
        except ValueError:
            sep = ""
        if not sep:
            raise OFAError(f"VQA target {text!r}: each item must be 'confidence|!+answer'")
    return out


def vqa_ref_score(predictions: Keyed, targets: Keyed) -> float:
    """OFA's validation ``vqa_score``: the mean of ``ref_dict.get(answer, 0)`` where each target is
    the TSV string ``"conf|!+answer&&..."`` or an already parsed ``{answer: conf}``. The answer is
    compared as it is (OFA strips it; no other normalization)."""
    scores = []
    for p, t in _pairs(predictions, targets, "vqa_ref_score"):
        ref = parse_ref_dict(t) if isinstance(t, str) else t
        if not isinstance(ref, Mapping):
            raise OFAError(f"vqa_ref_score: a target must be a 'conf|!+answer&&...' string or a dict, "
                           f"got {type(t).__name__}")
        scores.append(float(ref.get(p.strip(), 0.0)))
    return _mean(scores)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
