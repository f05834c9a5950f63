"""Text vocabularies a model config describes: the official ones, and the small model's subset."""

from __future__ import annotations

import dataclasses

import pytest

from openofa.config import get_config
from openofa.errors import OFAError
from openofa.mini.scenes import make_scene
from openofa.mini.vocab import scene_texts, text_vocabulary_lines
from openofa.text.dictionary import UNK, Dictionary, text_vocab_path
from openofa.tasks.caption import PROMPT as CAPTION_PROMPT
from openofa.tasks.grounding import PROMPT as REFCOCO_PROMPT
from openofa.text.tokenizer import OFATokenizer


def test_official_sizes_get_the_bundled_tokenizer():
    assert OFATokenizer.for_config(get_config("base")) is OFATokenizer.from_language("en")
    assert OFATokenizer.for_config(get_config("base-zh")) is OFATokenizer.from_language("zh")


def test_mini_vocabulary_layout():
    cfg = get_config("mini")
    tok = OFATokenizer.for_config(cfg)
    d = tok.dictionary
    assert len(d) == cfg.vocab_size
    assert d.num_bins == cfg.num_bins and d.code_dict_size == cfg.code_dict_size == 0
    assert tok.bin_0 == cfg.bin_0 == cfg.vocab_size - cfg.num_bins
    assert d.symbol(cfg.bin_0) == "<bin_0>" and d.symbol(cfg.vocab_size - 1) == f"<bin_{cfg.num_bins - 1}>"
    assert d.symbol(d.mask) == "<mask>" and d.mask == cfg.bin_0 - 1
    assert [d.symbol(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]


def test_mini_text_symbols_are_the_same_bpe_tokens_as_the_full_vocabulary():
    full = OFATokenizer.from_language("en")
    mini = OFATokenizer.for_config(get_config("mini"))
    for text in scene_texts():
        ids = mini.encode(text)
        assert UNK not in ids, text
        assert mini.decode(ids) == text
        # same BPE pieces, renumbered
        assert [mini.dictionary.symbol(i) for i in ids] == [full.dictionary.symbol(i) for i in full.encode(text)]


def test_every_generated_text_is_in_the_mini_vocabulary():
    tok = OFATokenizer.for_config(get_config("mini"))
    texts = [CAPTION_PROMPT]
    for seed in range(300):
        scene = make_scene(seed)
        texts.append(" " + scene.caption())
        for q, a in scene.questions():
            texts += [" " + q, " " + a]
        for text, _box in scene.referring_expressions():
            texts.append(REFCOCO_PROMPT.format(text))
    unknown = sorted({t for t in texts if UNK in tok.encode(t)})
    assert unknown == []


def test_words_outside_the_scenes_are_unknown():
    tok = OFATokenizer.for_config(get_config("mini"))
    assert UNK in tok.encode(" a giraffe eating leaves")


def test_checked_in_subset_matches_the_generator():
    lines = text_vocab_path("en", "scenes").read_text(encoding="utf-8").splitlines()
    assert lines == text_vocabulary_lines()


def test_vocab_size_mismatch_is_one_clear_error():
    cfg = dataclasses.replace(get_config("mini"), vocab_size=get_config("mini").vocab_size + 1)
    with pytest.raises(OFAError, match="vocab_size is"):
        OFATokenizer.for_config(cfg)
    with pytest.raises(OFAError, match="vocab_size is"):
        OFATokenizer.for_config(dataclasses.replace(get_config("base"), num_bins=500))


def test_unknown_subset_name():
    with pytest.raises(OFAError, match="unknown text vocabulary 'nope'"):
        Dictionary.for_config(dataclasses.replace(get_config("mini"), text_vocab="nope"))
    with pytest.raises(OFAError, match="must be letters"):
        Dictionary.for_config(dataclasses.replace(get_config("mini"), text_vocab="../x"))


def test_cached_vocabularies_are_built_once_under_concurrent_first_use():
    """Inputs are prepared in threads: two threads missing a cache at once must not build two
    dictionaries (a tokenizer would then hold one that is not the bundled one)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from openofa.text.dictionary import built_once

    calls = []

    @built_once
    def build(key):
        calls.append(key)
        time.sleep(0.05)  # long enough for every thread to miss the cache together
        return object()

    barrier = threading.Barrier(4)

    def first_use(_):
        barrier.wait()
        return build("en")

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(first_use, range(4)))
    assert calls == ["en"] and all(g is got[0] for g in got)


def test_reading_subset_spells_every_word_and_number_in_single_characters():
    """mini-read: a Chinese (BERT) subset whose wordpiece tokenizer works over the subset's own
    pieces, as the original's BertBPE does with that subset as its vocab.txt."""
    from openofa.mini.read import reading_text
    from openofa.tasks.ocr import PROMPT_ZH

    cfg = get_config("mini-read")
    tok = OFATokenizer.for_config(cfg)
    full = OFATokenizer.from_language("zh")
    assert cfg.language == "zh" and len(tok.dictionary) == cfg.vocab_size
    assert tok.tokenize(" kelto") == ["k", "##e", "##l", "##t", "##o"]
    assert tok.tokenize("4071") == ["4", "##0", "##7", "##1"]
    assert tok.tokenize(PROMPT_ZH) == full.tokenize(PROMPT_ZH)  # the prompt keeps its characters
    for seed in range(200):
        text, _ = reading_text(seed)
        ids = tok.encode(" " + text)
        assert len(ids) == len(text) and UNK not in ids, text
        assert tok.decode(ids) == text.lower()  # the pieces glue back into the word (BERT lower-cases)
        # each piece is the full vocabulary's symbol of the same name
        assert [full.dictionary.index(s) != UNK for s in tok.symbols(ids)] == [True] * len(ids)
    assert tok.tokenize(" a-b") == ["a", "[UNK]", "b"]  # what the subset lacks is BERT's [UNK]


def test_checked_in_reading_subset_matches_the_generator():
    lines = text_vocab_path("zh", "read").read_text(encoding="utf-8").splitlines()
    assert lines == text_vocabulary_lines("read")
