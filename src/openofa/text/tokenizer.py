"""Text -> OFA token ids and back, the dataset text normalisers, and the task prompts.

English ("en") reproduces the original's ``GPT2BPE`` + fairseq ``Dictionary`` pipeline:
GPT-2 byte-level BPE (``encoder.json`` + ``vocab.bpe``, GPT-2 pre-tokenisation regex, no
prefix space) gives GPT-2 ids; the original writes those ids as decimal strings and looks the
strings up in ``dict.txt``, so the OFA id of GPT-2 id ``g`` is ``dictionary.index(str(g))``
(*not* ``g + 4``: ``dict.txt`` is ordered by count). The BPE itself runs in the Hugging Face
``tokenizers`` library, which implements the same algorithm and regex.

Chinese ("zh") reproduces ``BertBPE``: a lower-casing BERT wordpiece tokenizer over
``vocab.txt`` (accents stripped, CJK characters split, punctuation split), whose wordpiece
*strings* are looked up in the Chinese dictionary. Unknown words become the wordpiece
``[UNK]``, an ordinary dictionary symbol (id 104), exactly as in the original.

``encode`` is exactly ``OFADataset.encode_text``: it does not add a leading space. The
original datasets pass ``' ' + text`` for English targets and questions (and the English
prompts start with a space), so call ``encode(" " + text)`` to get the ids a model was trained
on; ``encode("")`` is ``[]`` while ``encode(" ")`` is ``[1437]``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Iterable, Sequence

import torch

from openofa.errors import OFAError
from openofa.text.dictionary import BOS, EOS, LANGUAGE_DIRS, PAD, UNK, VOCAB_DIR, Dictionary, built_once

__all__ = [
    "OFATokenizer",
    "pre_caption",
    "pre_question",
    "pre_chinese",
    "caption_target_text",
    "strip_punctuation",
    "join_cjk",
    "pad_batch",
]

# ---------------------------------------------------------------------------------------
# Prompts: the exact source strings of the original datasets. English ones start with a
# space because the datasets encode them as they are; the Chinese ones do not.
# ``{}`` is filled with the normalised text (``pre_caption``).

# ---------------------------------------------------------------------------------------
# Dataset text normalisers (data/ofa_dataset.py). Same steps in the same order, since the
# order matters: lower-case, strip a fixed set of leading punctuation, '-' and '/' to spaces,
# runs of 2+ whitespace characters to one space, strip, then keep the first ``max_words``
# space-separated words.

_MULTI_SPACE = re.compile(r"\s{2,}")
_LEADING_PUNCT = ",.!?*#:;~"


def _squeeze_and_truncate(text: str, max_words: int | None) -> str:
    text = _MULTI_SPACE.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    if max_words is not None:
        words = text.split(" ")
        if len(words) > max_words:
            text = " ".join(words[:max_words])
    return text


def pre_caption(caption: str, max_words: int | None = None) -> str:
    """Normalise a caption / referring expression / hypothesis like ``OFADataset.pre_caption``.

    Also maps ``<person>`` to ``person``. A single tab between words is kept (only runs of
    two or more whitespace characters are squeezed), as in the original.
    """
    text = caption.lower().lstrip(_LEADING_PUNCT).replace("-", " ").replace("/", " ")
    text = text.replace("<person>", "person")
    return _squeeze_and_truncate(text, max_words)


def pre_question(question: str, max_words: int | None = None) -> str:
    """Normalise a VQA question like ``OFADataset.pre_question`` (no ``?`` is added here)."""
    text = question.lower().lstrip(_LEADING_PUNCT).replace("-", " ").replace("/", " ")
    return _squeeze_and_truncate(text, max_words)


_CHINESE_PUNCTUATION = (
    "＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､\u3000、〃〈〉《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏﹑﹔·！？｡。"
)


def pre_chinese(text: str, max_words: int) -> str:
    """``OFADataset.pre_chinese``: lower-case, squeeze spaces, keep the first ``max_words``
    *characters*. The original's punctuation removal replaces the whole punctuation string as
    one substring, so in practice it removes nothing; that is reproduced, not fixed."""
    text = text.lower().replace(_CHINESE_PUNCTUATION, " ").replace(string.punctuation, " ")
    text = _MULTI_SPACE.sub(" ", text)
    return text.rstrip("\n").strip(" ")[:max_words]


_NO_PUNCT = str.maketrans("", "", string.punctuation)


def caption_target_text(caption: str, *, train: bool = False, max_words: int | None = None) -> str:
    """Caption target text as ``CaptionDataset`` builds it (encode it as ``' ' + result``).

    Evaluation (and SCST): squeeze whitespace, split the references on ``&&``, drop ASCII
    punctuation from each, strip, re-join with ``&&``. Training: drop punctuation, keep the
    first ``max_words`` words.
    """
    if train:
        words = caption.translate(_NO_PUNCT).strip().split()
        return " ".join(words[:max_words] if max_words is not None else words)
    caption = " ".join(caption.strip().split())
    return "&&".join(c.translate(_NO_PUNCT).strip() for c in caption.strip().split("&&"))


_CJK = "\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_SPACE = re.compile(f"(?<=[{_CJK}])\\s+|\\s+(?=[{_CJK}])")


def join_cjk(text: str) -> str:
    """``text`` without the spaces a Chinese decoder writes between its characters: whitespace
    next to a CJK character or CJK/full-width punctuation goes, spaces between Latin words and
    numbers stay (``一 只 猫 ， iphone14 pro`` -> ``一只猫，iphone14 pro``)."""
    return _CJK_SPACE.sub("", text).strip()


def strip_punctuation(text: str) -> str:
    """``text`` without ASCII punctuation (the original's caption post-processing)."""
    return text.translate(_NO_PUNCT)


# ---------------------------------------------------------------------------------------
# GPT-2 byte <-> unicode alphabet, needed to decode exactly like the original (which joins the
# byte-level strings of all tokens, then decodes the bytes as UTF-8 with errors="replace").


def _byte_alphabet() -> dict[str, int]:
    """Map each of GPT-2's 256 printable stand-in characters back to its byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


_BYTE_OF_CHAR = _byte_alphabet()

# transformers' clean_up_tokenization, used by BertBPE.decode.
_BERT_CLEANUP = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class OFATokenizer:
    """Tokenizer + dictionary of one language. Get one with :meth:`from_language` (cached).

    Ids: ``bos``=0, ``pad``=1, ``eos``=2, ``unk``=3; ``bin_0``/``code_0`` are the first
    location/image-code ids. Datasets wrap sources as ``[bos] + ids + [eos]``, targets as
    ``ids + [eos]`` and decoder inputs as ``[bos] + ids``.
    """

    def __init__(self, language: str, dictionary: Dictionary, backend, gpt2_tokens: Sequence[str] | None = None):
        """Low level; use :meth:`from_language` or :meth:`from_bpe_dir`."""
        self.language = language
        self.dictionary = dictionary
        self._backend = backend
        self._gpt2_tokens = gpt2_tokens
        if language == "en":
            # GPT-2 id -> OFA id, and the GPT-2 byte-level string of every OFA id that is a
            # GPT-2 id (None for the others: specials, madeupwords, <mask>, codes, bins).
            self._gpt2_to_ofa = [dictionary.index(str(g)) for g in range(len(gpt2_tokens))]
            self._ofa_piece: list[str | None] = [None] * len(dictionary)
            for g, piece in enumerate(gpt2_tokens):
                i = dictionary.index(str(g))
                if i != UNK:
                    self._ofa_piece[i] = piece

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_language(cls, language: str = "en") -> "OFATokenizer":
        """The bundled tokenizer of ``"en"`` or ``"zh"``; built once per process (about 0.3 s for
        English), then returned from a cache."""
        if language not in LANGUAGE_DIRS:
            raise OFAError(f"unknown language {language!r}; expected one of {sorted(LANGUAGE_DIRS)}")
        return _bundled_tokenizer(language)

    @classmethod
    def for_config(cls, config) -> "OFATokenizer":
        """The tokenizer of a model config: the bundled one for the official vocabularies, or
        the same BPE over the dictionary :meth:`Dictionary.for_config` describes (a subset of
        text symbols, other numbers of bins or image codes), cached."""
        d = Dictionary.for_config(config)
        base = cls.from_language(config.language)
        if d is base.dictionary:
            return base
        return _derived_tokenizer(config.language, d, getattr(config, "text_vocab", None) or None)

    @classmethod
    def from_bpe_dir(cls, bpe_dir: str | Path, language: str = "en",
                     dictionary: Dictionary | None = None) -> "OFATokenizer":
        """Build from a folder laid out like the original's ``--bpe-dir``:
        ``encoder.json`` + ``vocab.bpe`` + ``dict.txt`` (en) or ``vocab.txt`` + ``dict.txt`` (zh)."""
        from tokenizers import Tokenizer, models, pre_tokenizers

        bpe_dir = Path(bpe_dir)
        if language == "en":
            needed = ("encoder.json", "vocab.bpe", "dict.txt")
        elif language == "zh":
            needed = ("vocab.txt", "dict.txt")
        else:
            raise OFAError(f"unknown language {language!r}; expected 'en' or 'zh'")
        for name in needed:
            if not (bpe_dir / name).is_file():
                raise OFAError(f"vocabulary file not found: {bpe_dir / name}")
        if dictionary is None:
            dictionary = Dictionary.load(bpe_dir / "dict.txt")
        try:
            if language == "en":
                model = models.BPE.from_file(str(bpe_dir / "encoder.json"), str(bpe_dir / "vocab.bpe"))
                backend = Tokenizer(model)
                backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
                vocab = backend.get_vocab()  # byte-level piece -> GPT-2 id
                pieces = [""] * (max(vocab.values()) + 1)
                for piece, g in vocab.items():
                    pieces[g] = piece
                return cls(language, dictionary, backend, pieces)
            model = models.WordPiece.from_file(
                str(bpe_dir / "vocab.txt"), unk_token="[UNK]", max_input_chars_per_word=100
            )
            return cls(language, dictionary, _bert_backend(model))
        except Exception as e:  # the tokenizers library reports bad files with its own errors
            raise OFAError(f"cannot read the {language} vocabulary in {bpe_dir}: {e}") from None

    # -- ids ------------------------------------------------------------------------------

    bos = BOS
    pad = PAD
    eos = EOS
    unk = UNK

    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)

    def __len__(self) -> int:
        return len(self.dictionary)

    @property
    def bin_0(self) -> int:
        return self.dictionary.bin_0

    @property
    def code_0(self) -> int:
        return self.dictionary.code_0

    @property
    def mask(self) -> int:
        return self.dictionary.mask_index

    @property
    def num_bins(self) -> int:
        return self.dictionary.num_bins

    def bin_id(self, k: int) -> int:
        return self.dictionary.bin_id(k)

    def code_id(self, k: int) -> int:
        return self.dictionary.code_id(k)

    # -- encoding -------------------------------------------------------------------------

    def _ids_of_encoding(self, enc) -> list[int]:
        if self.language == "en":
            table = self._gpt2_to_ofa
            return [table[g] for g in enc.ids]
        return self.dictionary.encode_symbols(enc.tokens)

    def tokenize(self, text: str) -> list[str]:
        """What the original's ``bpe.encode`` splits ``text`` into: GPT-2 ids as decimal
        strings (en) or wordpiece strings (zh)."""
        _check_text(text)
        enc = self._backend.encode(text, add_special_tokens=False)
        if self.language == "en":
            return [str(g) for g in enc.ids]
        return list(enc.tokens)

    def encode(
        self, text: str, *, bos: bool = False, eos: bool = False, length: int | None = None
    ) -> list[int]:
        """Ids of ``text``, exactly ``OFADataset.encode_text(text, length, bos, eos)``.

        No space is added: English datasets encode ``' ' + text`` (see the module doc).
        ``length`` truncates before ``bos``/``eos`` are added, as in the original.
        """
        _check_text(text)
        ids = self._ids_of_encoding(self._backend.encode(text, add_special_tokens=False))
        return _wrap(ids, bos, eos, length)

    def encode_no_bpe(
        self, text: str, *, bos: bool = False, eos: bool = False, length: int | None = None
    ) -> list[int]:
        """Whitespace split + dictionary lookup (``encode_text(..., use_bpe=False)``): how the
        refcoco target ``"<bin_a> <bin_b> <bin_c> <bin_d>"`` becomes four location ids."""
        _check_text(text)
        return _wrap(self.dictionary.encode_symbols(text.split()), bos, eos, length)

    def batch_encode(
        self,
        texts: Sequence[str],
        *,
        bos: bool = False,
        eos: bool = False,
        length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode several texts (same rules as :meth:`encode`) into a right-padded LongTensor
        ``(B, T)`` (pad = 1, like fairseq's ``collate_tokens``) and their lengths ``(B,)``."""
        if isinstance(texts, str):
            raise OFAError("batch_encode expects a list of strings, got a single string")
        for t in texts:
            _check_text(t)
        encs = self._backend.encode_batch(list(texts), add_special_tokens=False) if texts else []
        rows = [_wrap(self._ids_of_encoding(e), bos, eos, length) for e in encs]
        return pad_batch(rows, pad=self.pad)

    # -- decoding -------------------------------------------------------------------------

    def symbols(self, ids: Iterable[int]) -> list[str]:
        """Dictionary symbols of ``ids`` without bos/eos/pad (fairseq's ``Dictionary.string``,
        split)."""
        d = self.dictionary
        return [d.symbol(i) for i in _as_int_list(ids) if i not in (BOS, EOS, PAD)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` as the caption task decodes it: ``bpe.decode(dict.string(ids))``.

        bos/eos/pad are dropped wherever they occur. English keeps the leading space the
        datasets put there (``decode(encode(" a cat")) == " a cat"``); symbols that are not
        GPT-2 tokens (``<unk>``, ``<mask>``, ``<code_k>``, ``<bin_k>``) come out literally and,
        like in the original, without spaces around them. Chinese joins wordpieces with
        spaces, glues ``##`` pieces and applies BERT's punctuation clean-up
        (``"图 片 描 述?"``).
        """
        if self.language == "en":
            pieces = self._ofa_piece
            d = self.dictionary
            chars: list[str] = []
            for i in _as_int_list(ids):
                if i in (BOS, EOS, PAD):
                    continue
                piece = pieces[i] if 0 <= i < len(pieces) else None
                chars.append(piece if piece is not None else d.symbol(i))
            return _bytes_decode("".join(chars))
        text = " ".join(self.symbols(ids)).replace(" ##", "").strip()
        for old, new in _BERT_CLEANUP:
            text = text.replace(old, new)
        return text

    def batch_decode(self, batch: Iterable[Iterable[int]]) -> list[str]:
        """:meth:`decode` of each row (a 2-D tensor or a list of id lists)."""
        return [self.decode(row) for row in batch]

    def __repr__(self) -> str:
        return f"OFATokenizer(language={self.language!r}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------


@built_once
def _bundled_tokenizer(language: str) -> OFATokenizer:
    return OFATokenizer.from_bpe_dir(VOCAB_DIR / LANGUAGE_DIRS[language], language,
                                     Dictionary.for_language(language))


@built_once
def _derived_tokenizer(language: str, dictionary: Dictionary, name: str | None = None) -> OFATokenizer:
    """English: the bundled BPE over ``dictionary`` (a token outside a subset reads as ``<unk>``).
    Chinese with a subset ``name``: a wordpiece tokenizer over the subset's own pieces, which is
    what the original's ``BertBPE`` does given that subset as its ``vocab.txt``; a word then splits
    into the longest pieces the subset has (``cat`` -> ``c ##a ##t`` when it holds single
    characters) instead of becoming ``[UNK]``."""
    base = _bundled_tokenizer(language)
    if language != "zh" or name is None:
        return OFATokenizer(language, dictionary, base._backend, base._gpt2_tokens)
    from tokenizers import models

    # the subset's text symbols: after the specials, before <mask>, codes and bins
    pieces = ["[UNK]"] + [dictionary.symbol(i) for i in range(dictionary.nspecial, dictionary.mask_index)]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(pieces))}
    model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    return OFATokenizer(language, dictionary, _bert_backend(model))


def _bert_backend(model):
    """``BertBPE``'s pipeline around a wordpiece ``model``: lower-casing BERT normaliser (CJK
    characters split, accents kept), BERT pre-tokeniser, BERT's specials never split."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers

    backend = Tokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.add_special_tokens(_BERT_SPECIALS)
    return backend


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise OFAError(f"text must be a str, got {type(text).__name__}")


def _wrap(ids: list[int], bos: bool, eos: bool, length: int | None) -> list[int]:
    if length is not None:
        ids = ids[:length]
    if bos:
        ids = [BOS] + ids
    if eos:
        ids = ids + [EOS]
    return ids


def _as_int_list(ids: Iterable[int]) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise OFAError(f"decode expects a 1-D sequence of ids, got a tensor of shape {tuple(ids.shape)}")
        return [int(i) for i in ids.tolist()]
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise OFAError(f"decode expects a sequence of integer ids, got {ids!r:.80}") from None


def _bytes_decode(chars: str) -> str:
    out = bytearray()
    table = _BYTE_OF_CHAR
    for c in chars:
        b = table.get(c)
        if b is None:  # only in literal symbols outside GPT-2's alphabet
            out += c.encode("utf-8")
        else:
            out.append(b)
    return out.decode("utf-8", errors="replace")


def pad_batch(rows: Sequence[Sequence[int]], pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into a LongTensor ``(B, max_len)`` and return it with the lengths."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if len(rows) else 0
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out, lengths
