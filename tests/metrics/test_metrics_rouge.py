"""Summarization ROUGE (rouge_score with the Porter stemmer, as OFA's Gigaword evaluation), by hand."""

from __future__ import annotations

import pytest

from openofa.errors import OFAError
from openofa.metrics import gigaword_hypothesis, rouge_scores
from openofa.metrics.porter import stem
from openofa.metrics.rouge import rouge_tokenize


@pytest.mark.parametrize("word, out", [
    ("caresses", "caress"), ("ponies", "poni"), ("ties", "tie"), ("agreed", "agre"), ("plastered", "plaster"),
    ("hopping", "hop"), ("filing", "file"), ("falling", "fall"), ("happy", "happi"), ("sky", "sky"),
    ("skies", "sky"), ("dying", "die"), ("relational", "relat"), ("generalization", "gener"), ("police", "polic"),
])
def test_porter(word, out):
    assert stem(word) == out


def test_tokenizer():
    assert rouge_tokenize("Police were arresting 11 protesters; it's ## news!") == \
        ["polic", "were", "arrest", "11", "protest", "it", "s", "news"]
    assert rouge_tokenize("Arresting", stemmer=False) == ["arresting"]


def test_rouge_by_hand():
    hyps = ["the cat sat on the mat", "Police were arresting 11 protesters."]
    refs = ["the cat is on the mat", "police arrest ## protesters"]
    # pair 1: unigrams 5/6 and 5/6, bigrams 3/5 and 3/5, LCS 5
    # pair 2: [polic were arrest 11 protest] vs [polic arrest protest]: P 3/5, R 1, no common bigram
    f1 = 2 * 0.6 * 1.0 / 1.6
    scores = rouge_scores(hyps, refs)
    assert scores["ROUGE-1"] == pytest.approx((5 / 6 + f1) / 2)
    assert scores["ROUGE-2"] == pytest.approx((0.6 + 0.0) / 2)
    assert scores["ROUGE-L"] == pytest.approx((5 / 6 + f1) / 2)
    assert rouge_scores([""], ["a b"]) == {"ROUGE-1": 0.0, "ROUGE-2": 0.0, "ROUGE-L": 0.0}


def test_gigaword_hypothesis():
    assert gigaword_hypothesis("Police arrest 11 people ( in capital )") == \
        "police arrest ## people -lrb- in capital -rrb-"
    assert gigaword_hypothesis("it ' s a co - op ; we don ' t pay 3 , 000") == "it 's a co-op ; we do n't pay 3,000"


def test_errors():
    with pytest.raises(OFAError, match="2 summaries but 1"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(OFAError, match="lists"):
        rouge_scores("a", "a")
