"""The OFA vocabulary: a fairseq-compatible symbol <-> id table.

The original builds its dictionary in ``OFATask.setup_task`` and the ids a checkpoint was
trained with depend on every detail of that, so this class reproduces it exactly:

1. the four fairseq specials ``<s>``=0 (bos), ``<pad>``=1, ``</s>``=2 (eos), ``<unk>``=3;
2. each line of ``dict.txt`` in file order, split like fairseq with ``rsplit(" ", 1)`` after
   stripping trailing whitespace (so a line ``" 1"`` gives the *empty* symbol, as in the
   Chinese ``dict.txt``; splitting on any whitespace would lose that line and shift every
   later id by one);
3. ``<mask>``, then ``<code_0>`` .. ``<code_{code_dict_size-1}>``, then ``<bin_0>`` ..
   ``<bin_{num_bins-1}>``.

English (``BPE/dict.txt``) has 59457 symbols, Chinese (``BERT_CN_dict/dict.txt``) 30325.
Unknown symbols look up as ``<unk>`` (3), like fairseq's ``Dictionary.index``.
"""

from __future__ import annotations

import functools
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from openofa.errors import OFAError

__all__ = [
    "Dictionary",
    "VOCAB_DIR",
    "LANGUAGE_DIRS",
    "NUM_BINS",
    "CODE_DICT_SIZE",
    "BOS",
    "PAD",
    "EOS",
    "UNK",
]

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"
#: Folder (under :data:`VOCAB_DIR`) holding each language's vocabulary files; the names are
#: the original's ``--bpe-dir`` folders.
LANGUAGE_DIRS = {"en": "BPE", "zh": "BERT_CN_dict"}

NUM_BINS = 1000
CODE_DICT_SIZE = 8192

BOS, PAD, EOS, UNK = 0, 1, 2, 3
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_OVERWRITE_FLAG = "#fairseq:overwrite"


class Dictionary:
    """Ordered symbol table with fairseq's ids.

    Build one with :meth:`load` (a ``dict.txt`` file) or :meth:`for_language` (the bundled
    English/Chinese files, cached). ``index`` maps a symbol to its id (``<unk>`` when absent),
    ``symbol`` / ``d[i]`` maps back.
    """

    def __init__(
        self,
        symbols: Iterable[str] = (),
        *,
        num_bins: int = NUM_BINS,
        code_dict_size: int = CODE_DICT_SIZE,
    ) -> None:
        """Specials, then ``symbols`` in order, then ``<mask>``, codes and bins."""
        self._symbols: list[str] = []
        self._indices: dict[str, int] = {}
        for s in _SPECIALS:
            self._add(s)
        self.nspecial = len(self._symbols)
        for s in symbols:
            self._add(s)
        self._finish(num_bins, code_dict_size)

    # -- construction ---------------------------------------------------------------------

    def _add(self, symbol: str) -> int:
        # Like fairseq's add_symbol: an existing symbol keeps its id and nothing is appended.
        idx = self._indices.get(symbol)
        if idx is None:
            idx = len(self._symbols)
            self._indices[symbol] = idx
            self._symbols.append(symbol)
        return idx

    def _finish(self, num_bins: int, code_dict_size: int) -> None:
        if num_bins < 1 or code_dict_size < 0:
            raise OFAError(f"num_bins must be >= 1 and code_dict_size >= 0, got {num_bins}, {code_dict_size}")
        self.num_bins = num_bins
        self.code_dict_size = code_dict_size
        self.mask_index = self._add("<mask>")
        self._code_0 = len(self._symbols)
        for k in range(code_dict_size):
            self._add(f"<code_{k}>")
        for k in range(num_bins):
            self._add(f"<bin_{k}>")

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        num_bins: int = NUM_BINS,
        code_dict_size: int = CODE_DICT_SIZE,
    ) -> "Dictionary":
        """Read a fairseq ``dict.txt`` (``<symbol> <count> [#fairseq:overwrite]`` per line).

        A duplicate symbol without the overwrite flag, or a line without a count, raises
        :class:`OFAError` naming the file and line, as fairseq refuses those files too.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise OFAError(f"dictionary file not found: {path}") from None
        except UnicodeDecodeError:
            raise OFAError(f"dictionary file is not UTF-8 text: {path}") from None
        except OSError as e:
            raise OFAError(f"cannot read dictionary file {path}: {e.strerror or e}") from None

        self = cls.__new__(cls)
        self._symbols = []
        self._indices = {}
        for s in _SPECIALS:
            self._add(s)
        self.nspecial = len(self._symbols)
        # File lines split on "\n" only (like reading a text file), never on U+2028 & co.
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for lineno, raw in enumerate(lines, start=1):
            line = raw.rstrip()
            parts = line.rsplit(" ", 1)
            overwrite = False
            if len(parts) == 2 and parts[1] == _OVERWRITE_FLAG:
                overwrite = True
                parts = parts[0].rsplit(" ", 1)
            if len(parts) != 2:
                raise OFAError(f"{path}:{lineno}: expected '<symbol> <count>', got {raw!r}")
            word, count = parts
            try:
                int(count)
            except ValueError:
                raise OFAError(f"{path}:{lineno}: count {count!r} is not an integer") from None
            if word in self._indices and not overwrite:
                raise OFAError(f"{path}:{lineno}: duplicate symbol {word!r}")
            # fairseq appends a flagged duplicate as a new entry and points the symbol at it.
            self._indices[word] = len(self._symbols)
            self._symbols.append(word)
        self._finish(num_bins, code_dict_size)
        return self

    @classmethod
    def for_language(cls, language: str) -> "Dictionary":
        """The bundled dictionary of ``"en"`` (59457 symbols) or ``"zh"`` (30325), cached."""
        if language not in LANGUAGE_DIRS:
            raise OFAError(f"unknown language {language!r}; expected one of {sorted(LANGUAGE_DIRS)}")
        return _bundled(language)

    @classmethod
    def for_config(cls, config) -> "Dictionary":
        """The dictionary a model config describes: the bundled one of ``config.language``, or,
        when ``config.text_vocab`` names a subset (``dict.<name>.txt`` beside the language's
        ``dict.txt``), only those text symbols, followed by ``<mask>``, ``code_dict_size`` codes
        and ``num_bins`` bins. Its size must equal ``config.vocab_size``."""
        name = getattr(config, "text_vocab", None) or None
        d = configured_dictionary(config.language, name, int(config.num_bins), int(config.code_dict_size))
        if len(d) != config.vocab_size:
            what = f"text vocabulary {name!r}" if name else f"the {config.language} vocabulary"
            raise OFAError(
                f"{what} with {config.num_bins} bins and {config.code_dict_size} image codes has "
                f"{len(d)} symbols, but the model's vocab_size is {config.vocab_size}"
            )
        return d

    # -- lookups --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._indices

    def __getitem__(self, idx: int) -> str:
        return self.symbol(idx)

    def __iter__(self):
        return iter(self._symbols)

    def __repr__(self) -> str:
        return f"Dictionary(size={len(self)}, num_bins={self.num_bins}, code_dict_size={self.code_dict_size})"

    def index(self, symbol: str) -> int:
        """Id of ``symbol``; ``<unk>`` (3) if it is not in the dictionary (fairseq behaviour)."""
        return self._indices.get(symbol, UNK)

    def symbol(self, idx: int) -> str:
        """Symbol of id ``idx``; :class:`OFAError` if it is outside ``0 .. len-1``."""
        i = int(idx)
        if not 0 <= i < len(self._symbols):
            raise OFAError(f"token id {i} is out of range for a vocabulary of size {len(self._symbols)}")
        return self._symbols[i]

    @property
    def symbols(self) -> Sequence[str]:
        """All symbols in id order (read-only view)."""
        return tuple(self._symbols)

    def encode_symbols(self, words: Iterable[str]) -> list[int]:
        """``[index(w) for w in words]``: fairseq's ``encode_line`` on an already split line."""
        get = self._indices.get
        return [get(w, UNK) for w in words]

    # -- special ids ----------------------------------------------------------------------

    @property
    def bos(self) -> int:
        return BOS

    @property
    def pad(self) -> int:
        return PAD

    @property
    def eos(self) -> int:
        return EOS

    @property
    def unk(self) -> int:
        return UNK

    @property
    def mask(self) -> int:
        return self.mask_index

    @property
    def code_0(self) -> int:
        """Id of ``<code_0>`` (50265 in English, 21133 in Chinese)."""
        return self._code_0

    @property
    def bin_0(self) -> int:
        """Id of ``<bin_0>``: ``len(dict) - num_bins``, the offset the refcoco code subtracts."""
        return len(self._symbols) - self.num_bins

    def code_id(self, k: int) -> int:
        """Id of ``<code_k>`` (image code ``k`` in ``0 .. code_dict_size-1``)."""
        k = int(k)
        if not 0 <= k < self.code_dict_size:
            raise OFAError(f"image code {k} is out of range 0..{self.code_dict_size - 1}")
        return self._code_0 + k

    def bin_id(self, k: int) -> int:
        """Id of ``<bin_k>`` (location bin ``k`` in ``0 .. num_bins-1``)."""
        k = int(k)
        if not 0 <= k < self.num_bins:
            raise OFAError(f"location bin {k} is out of range 0..{self.num_bins - 1}")
        return self.bin_0 + k

    def is_bin(self, idx: int) -> bool:
        return self.bin_0 <= int(idx) < len(self._symbols)

    def is_code(self, idx: int) -> bool:
        return self._code_0 <= int(idx) < self._code_0 + self.code_dict_size


def built_once(fn):
    """``lru_cache`` whose misses are built under one process-wide lock: inputs are prepared in
    worker threads, and two threads missing the cache at once would otherwise build two objects,
    keep one here and the other in a cache built on top of it (a tokenizer whose dictionary is not
    the bundled one)."""
    cached = lru_cache(maxsize=None)(fn)

    @functools.wraps(fn)
    def call(*args):
        with _BUILD_LOCK:
            return cached(*args)

    call.cache_info = cached.cache_info
    call.cache_clear = cached.cache_clear
    return call


_BUILD_LOCK = threading.RLock()


@built_once
def _bundled(language: str) -> Dictionary:
    return Dictionary.load(VOCAB_DIR / LANGUAGE_DIRS[language] / "dict.txt")


def text_vocab_path(language: str, name: str) -> Path:
    """File of the named text-symbol subset of ``language`` (``dict.<name>.txt``)."""
    if language not in LANGUAGE_DIRS:
        raise OFAError(f"unknown language {language!r}; expected one of {sorted(LANGUAGE_DIRS)}")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise OFAError(f"text vocabulary name {name!r} must be letters, digits, '-' or '_'")
    return VOCAB_DIR / LANGUAGE_DIRS[language] / f"dict.{name}.txt"


@built_once
def configured_dictionary(language: str, name: str | None, num_bins: int, code_dict_size: int) -> Dictionary:
    """The dictionary of ``language`` with the text symbols of subset ``name`` (None: all of
    them), ``num_bins`` bins and ``code_dict_size`` codes; cached, and the bundled one itself for
    the official settings."""
    if name is None:
        if num_bins == NUM_BINS and code_dict_size == CODE_DICT_SIZE:
            return Dictionary.for_language(language)
        if language not in LANGUAGE_DIRS:
            raise OFAError(f"unknown language {language!r}; expected one of {sorted(LANGUAGE_DIRS)}")
        path = VOCAB_DIR / LANGUAGE_DIRS[language] / "dict.txt"
    else:
        path = text_vocab_path(language, name)
        if not path.is_file():
            raise OFAError(f"unknown text vocabulary {name!r} for language {language!r} (no file {path.name})")
    return Dictionary.load(path, num_bins=num_bins, code_dict_size=code_dict_size)
