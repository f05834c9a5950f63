"""Tokenizer, dictionary, normalisers and prompts against the original's outputs
(tests/fixtures/golden/tokenizer.json, preprocess.json/npz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openofa.errors import OFAError
from openofa.tasks import caption, entailment, grounding, vqa
from openofa.tasks.caption import PROMPT as CAPTION_PROMPT
from openofa.text import (
    Dictionary,
    OFATokenizer,
    caption_target_text,
    pre_caption,
    pre_chinese,
    pre_question,
)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
TOK = json.loads((GOLDEN / "tokenizer.json").read_text(encoding="utf-8"))
CASES = TOK["cases"]
CASE_IDS = [f"{i}:{c['text'][:24]!r}" for i, c in enumerate(CASES)]


@pytest.fixture(scope="module")
def en() -> OFATokenizer:
    return OFATokenizer.from_language("en")


@pytest.fixture(scope="module")
def zh() -> OFATokenizer:
    return OFATokenizer.from_language("zh")


# -- English encoding / decoding: every case of tokenizer.json ------------------------------


def test_fixture_has_all_cases():
    assert len(CASES) == 25


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_encode_space_plus_text(en, case):
    assert en.encode(" " + case["text"]) == case["ids_space_plus_text"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_encode_with_bos_eos(en, case):
    assert en.encode(" " + case["text"], bos=True, eos=True) == case["ids_with_bos_eos"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_encode_adds_no_space(en, case):
    assert en.encode(case["text"]) == case["ids_text_no_space"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_encode_no_bpe(en, case):
    assert en.encode_no_bpe(case["text"]) == case["ids_no_bpe"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bpe_pieces_and_dict_string(en, case):
    assert " ".join(en.tokenize(" " + case["text"])) == case["bpe_of_space_plus_text"]
    assert " ".join(en.symbols(case["ids_space_plus_text"] + [en.eos])) == case["dict_string"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_decode(en, case):
    assert en.decode(case["ids_space_plus_text"] + [en.eos]) == case["decoded"]
    assert en.decode(torch.tensor(case["ids_with_bos_eos"])) == case["decoded"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_pre_caption_and_pre_question(case):
    assert pre_caption(case["text"]) == case["pre_caption"]
    assert pre_question(case["text"]) == case["pre_question"]


def test_empty_and_space(en):
    assert en.encode("") == []
    assert en.encode(" ") == [1437]
    assert en.encode("", bos=True, eos=True) == [0, 2]


def test_decode_strips_specials_everywhere_and_keeps_location_symbols(en):
    ids = en.encode(" a cat")
    assert en.decode([0] + ids + [2, 1, 1]) == " a cat"
    assert en.decode([en.bin_id(12), en.bin_id(400)]) == "<bin_12><bin_400>"  # joined like the original
    assert en.decode([en.code_id(5)]) == "<code_5>"
    assert en.decode([en.unk]) == "<unk>"
    assert en.decode([]) == ""


def test_decode_bad_ids(en):
    with pytest.raises(OFAError, match="59457"):
        en.decode([59457])
    with pytest.raises(OFAError, match="1-D"):
        en.decode(torch.zeros(2, 2, dtype=torch.long))


def test_encode_length_truncates_before_bos_eos(en):
    ids = en.encode(" a man riding a horse", length=2, bos=True, eos=True)
    assert ids == [0, 10, 313, 2]


def test_encode_rejects_non_text(en):
    with pytest.raises(OFAError, match="str"):
        en.encode(123)  # type: ignore[arg-type]
    with pytest.raises(OFAError, match="list"):
        en.batch_encode("a single string")  # type: ignore[arg-type]


def test_batch_encode_matches_collated_caption_batch(en):
    """Sources and targets of the original CaptionDataset.collater (split 'test')."""
    npz = np.load(GOLDEN / "preprocess.npz")
    meta = json.loads((GOLDEN / "preprocess.json").read_text())
    order = meta["caption"]["batch_order"]
    src, src_len = en.batch_encode([CAPTION_PROMPT] * len(order), bos=True, eos=True)
    assert src.dtype == torch.long
    assert torch.equal(src, torch.from_numpy(npz["caption384_batch/src_tokens"]))
    assert torch.equal(src_len, torch.from_numpy(npz["caption384_batch/src_lengths"]))
    texts = [" " + caption_target_text(meta["caption"]["captions"][n]) for n in order]
    tgt, _ = en.batch_encode(texts, eos=True)
    prev, _ = en.batch_encode(texts, bos=True)
    assert torch.equal(tgt, torch.from_numpy(npz["caption384_batch/target"]))
    assert torch.equal(prev, torch.from_numpy(npz["caption384_batch/prev_output_tokens"]))


def test_batch_encode_pads_right(en):
    toks, lengths = en.batch_encode([" a", " a man riding", ""])
    assert lengths.tolist() == [1, 3, 0]
    assert toks.shape == (3, 3)
    assert toks[0].tolist() == [10, 1, 1] and toks[2].tolist() == [1, 1, 1]


def test_caption_target_text_train():
    assert caption_target_text("A red, square!  here", train=True, max_words=2) == "A red"


# -- ids and dictionary facts -------------------------------------------------------------


def test_english_special_ids(en):
    assert (en.bos, en.pad, en.eos, en.unk) == (TOK["bos"], TOK["pad"], TOK["eos"], TOK["unk"])
    assert en.vocab_size == len(en) == TOK["vocab_size"] == 59457
    assert en.bin_0 == TOK["bin_0"] == 58457 and en.code_0 == TOK["code_0"] == 50265
    assert en.mask == 50264
    assert en.bin_id(999) == 59456 and en.code_id(8191) == 58456
    d = en.dictionary
    assert [d[i] for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert d[4] == "13" and d.index("13") == 4  # dict.txt is ordered by count, not GPT-2 id
    assert d.index("madeupword0000") == 50261
    assert d.index("<bin_0>") == 58457 and d.index("no such symbol") == 3


def test_chinese_dictionary_facts(zh):
    d = zh.dictionary
    assert len(d) == zh.vocab_size == 30325
    assert d.index("的") == 4642 and d.index("##s") == 8122
    assert d.index("<mask>") == zh.mask == 21132
    assert d.index("<code_0>") == zh.code_0 == 21133 and d.index("<code_8191>") == 29324
    assert d.index("<bin_0>") == zh.bin_0 == 29325 and d.index("<bin_999>") == 30324
    assert [d.index(s) for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [4, 104, 105, 106, 107]
    # fairseq parses with rsplit(" ", 1): a line " 1" is the empty symbol; "##" stays one symbol.
    assert d[347] == "" and d.index("") == 347
    assert d[13506] == "##"


def test_chinese_ids_are_bert_ids_plus_4_except_broken_lines(zh):
    from openofa.text.dictionary import VOCAB_DIR

    vocab = (VOCAB_DIR / "BERT_CN_dict" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    d = zh.dictionary
    mismatched = [i for i, tok in enumerate(vocab) if d.index(tok) != i + 4]
    assert mismatched == [343, 13502]


def test_chinese_sentence_round_trip(zh):
    text = "一个男人在海滩上骑马。"
    ids = zh.encode(text)
    assert len(ids) == len(text)
    assert ids[3] == zh.dictionary.index("人")
    assert zh.decode([0] + ids + [2]) == " ".join(text)
    assert zh.decode(ids).replace(" ", "") == text


def test_chinese_prompt_wordpieces_and_cleanup(zh):
    ids = zh.encode(caption.PROMPT_ZH, bos=True, eos=True)
    assert ids[0] == 0 and ids[-1] == 2
    assert zh.symbols(ids) == list("图片描述了什么内容?")
    assert zh.decode(ids) == "图 片 描 述 了 什 么 内 容?"  # BERT clean-up glues " ?"
    assert zh.tokenize("Cats 的") == ["cat", "##s", "的"]  # lower-cased wordpieces
    assert zh.encode("cats") == [zh.dictionary.index("cat"), 8122]
    assert zh.decode(zh.encode("cats")) == "cats"


def test_chinese_unknown_is_bert_unk_symbol(zh):
    # The BERT tokenizer emits the wordpiece "[UNK]", an ordinary dictionary symbol (104).
    assert zh.encode("😀") == [104]
    assert zh.encode_no_bpe("<bin_3> <code_1> 的") == [29328, 21134, 4642]


def test_bundled_tokenizer_is_cached():
    assert OFATokenizer.from_language("en") is OFATokenizer.from_language("en")
    assert Dictionary.for_language("zh") is Dictionary.for_language("zh")


def test_unknown_language():
    with pytest.raises(OFAError, match="'fr'"):
        OFATokenizer.from_language("fr")
    with pytest.raises(OFAError, match="'fr'"):
        Dictionary.for_language("fr")


def test_bin_and_code_id_ranges(en):
    with pytest.raises(OFAError, match="1000"):
        en.bin_id(1000)
    with pytest.raises(OFAError, match="-1"):
        en.code_id(-1)


# -- dictionary files ---------------------------------------------------------------------


def test_dictionary_load_errors(tmp_path):
    with pytest.raises(OFAError, match="not found"):
        Dictionary.load(tmp_path / "missing.txt")
    bad = tmp_path / "dup.txt"
    bad.write_text("a 1\nb 2\na 3\n", encoding="utf-8")
    with pytest.raises(OFAError, match=r"dup\.txt:3: duplicate symbol 'a'"):
        Dictionary.load(bad)
    nocount = tmp_path / "nocount.txt"
    nocount.write_text("a 1\nlonely\n", encoding="utf-8")
    with pytest.raises(OFAError, match=r"nocount\.txt:2"):
        Dictionary.load(nocount)
    badcount = tmp_path / "badcount.txt"
    badcount.write_text("a x\n", encoding="utf-8")
    with pytest.raises(OFAError, match=r"badcount\.txt:1: count 'x'"):
        Dictionary.load(badcount)


def test_dictionary_overwrite_flag_and_layout(tmp_path):
    f = tmp_path / "dict.txt"
    f.write_text("x 5\ny 3\nx 1 #fairseq:overwrite\n", encoding="utf-8")
    d = Dictionary.load(f, num_bins=10, code_dict_size=2)
    assert d.index("x") == 6 and d[4] == "x"  # fairseq appends and re-points the symbol
    assert len(d) == 4 + 3 + 1 + 2 + 10
    assert d.code_0 == 8 and d.bin_0 == 10 and d.bin_id(9) == 19
    with pytest.raises(OFAError, match="out of range"):
        d.symbol(len(d))


# -- normalisers and prompts --------------------------------------------------------------


def test_prompt_ids_match_the_original(en):
    """The tasks' source builders give the original's ids (tests/tasks has the rest of them)."""
    p = TOK["prompts"]
    assert CAPTION_PROMPT == p["caption_src"]["text"]
    assert en.encode(CAPTION_PROMPT, bos=True, eos=True) == p["caption_src"]["ids"]
    ref = p["refcoco_src_example"]
    assert grounding.source(en, "the man in the red shirt", 80) == en.encode(ref["text"], bos=True, eos=True)
    assert en.encode(ref["text"], bos=True, eos=True) == ref["ids"]
    q = p["vqa_src_example"]
    assert vqa.source(en, q["question_raw"], None, 128) == en.encode(q["text"], bos=True, eos=True) == q["ids"]


def test_prompts_of_the_original(en):
    assert grounding.PROMPT == ' which region does the text " {} " describe?'
    assert grounding.PROMPT_ZH == '这段文字" {} "描述的是哪个区域？'
    assert entailment.source(en, "Two dogs.", None, 80) == en.encode(' does the image describe " two dogs. "?',
                                                                      bos=True, eos=True)
    assert entailment.source(en, "dogs", "A Cat", 80) == en.encode(
        ' can image and text1 " a cat " imply text2 " dogs "?', bos=True, eos=True)


def test_refcoco_sources_from_preprocess_json(en):
    meta = json.loads((GOLDEN / "preprocess.json").read_text())
    for name in meta["images"]:
        r = meta["refcoco"][name]
        assert grounding.source(en, r["text"], 80) == r["source_ids"], name


def test_normaliser_details():
    assert pre_caption(",.!?Hello <person>  -  there/you", max_words=3) == "hello person there"
    assert pre_question("What is   this?\n") == "what is this?"
    assert pre_question("a b c d", max_words=2) == "a b"
    assert vqa.source(OFATokenizer.from_language("en"), "Is it red", None, 128)[1:-1] == \
        OFATokenizer.from_language("en").encode(" is it red?")
    # The original's punctuation removal is a no-op (whole-string replace); truncation is by characters.
    assert pre_chinese("ABC  图片，描述 ", 4) == "abc "
    assert pre_chinese("图片，描述。", 10) == "图片，描述。"


def test_from_bpe_dir(tmp_path):
    import shutil

    from openofa.text.dictionary import VOCAB_DIR

    with pytest.raises(OFAError, match=r"vocabulary file not found: .*encoder\.json"):
        OFATokenizer.from_bpe_dir(tmp_path, "en")
    with pytest.raises(OFAError, match=r"vocabulary file not found: .*vocab\.txt"):
        OFATokenizer.from_bpe_dir(tmp_path, "zh")
    with pytest.raises(OFAError, match="'xx'"):
        OFATokenizer.from_bpe_dir(tmp_path, "xx")
    for name in ("encoder.json", "vocab.bpe", "dict.txt"):
        shutil.copy(VOCAB_DIR / "BPE" / name, tmp_path / name)
    tok = OFATokenizer.from_bpe_dir(tmp_path, "en")
    assert tok.encode(CAPTION_PROMPT) == TOK["prompts"]["caption_src"]["ids"][1:-1]
    (tmp_path / "encoder.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(OFAError, match="cannot read the en vocabulary"):
        OFATokenizer.from_bpe_dir(tmp_path, "en")
