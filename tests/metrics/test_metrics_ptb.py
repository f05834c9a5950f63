"""The pure-Python PTB tokenizer against the Java PTBTokenizer that coco-caption runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openofa.metrics import coco_tokenize, ptb_tokenize

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "metrics" / "ptb_tokenizer.json"


@pytest.fixture(scope="module")
def java():
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_tokens_equal_java(java):
    ours = [" ".join(t) for t in ptb_tokenize(java["strings"])]
    bad = [(s, o, j) for s, o, j in zip(java["strings"], ours, java["java_tokens"]) if o != j]
    assert len(ours) == len(java["java_tokens"])
    assert not bad, bad[:5]


def test_filtered_equal_coco_caption(java):
    assert coco_tokenize(java["strings"]) == java["filtered"]


@pytest.mark.parametrize("text, tokens", [
    ("A man's dog can't run.", "a man 's dog ca n't run"),
    ("They're gonna eat, I'm sure!", "they 're gon na eat i 'm sure"),
    ("It cannot be (yes) a two-story house", "it can not be -lrb- yes -rrb- a two-story house"),
    ("1 1/2 cups -- 50% of $5 at 3:30", "1\u00a01/2 cups 50 % of $ 5 at 3:30"),
    ('He said "hello" to Mr. Smith...', "he said hello to mr. smith"),
    ("A caf\u00e9 \U0001F600 in S\u00e3o Paulo", "a caf\u00e9 in s\u00e3o paulo"),
    ("the letter a.", "the letter a."),
    ("rock 'n' roll, y'all; o'clock", "rock 'n' roll y' all o'clock"),
    ("Wow!! ---- ok ----- ok", "wow !! ok ----- ok"),
    ("", ""),
])
def test_examples(text, tokens):
    assert coco_tokenize([text]) == [tokens]


def test_next_caption_matters_after_abbreviation():
    # "A." then a line starting with "The": the lexer reads the period as a sentence end
    assert coco_tokenize(["the letter A.", "The end"]) == ["the letter a", "the end"]
    assert coco_tokenize(["the letter A.", "the end"]) == ["the letter a.", "the end"]


def test_line_breaks_inside_a_caption_are_spaces():
    assert coco_tokenize(["a dog\non grass", "a cat\r\nsleeps"]) == ["a dog on grass", "a cat sleeps"]
