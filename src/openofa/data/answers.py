"""A closed list of candidate answers, and the per-position constraint masks it gives a target.

The original's VQA finetuning (and its SNLI-VE, GLUE and ImageNet finetuning) keeps the model
inside a fixed answer list (``--ans2label-file`` / ``--ans2label-dict``): the answers, encoded as
``[bos] + ids(" " + answer) + [eos]``, go into a prefix trie, and at every answer position of a
training target the tokens the trie allows after ``[bos] + answer-so-far`` form that position's
*constraint mask*. The label-smoothed loss then normalises the softmax and spreads the smoothing
over the allowed tokens only (``openofa.train.loss``).

Answer-list files (:func:`read_answers`), chosen by the file's suffix:

* ``.json``: a list of answers, or an object ``{answer: label index}`` (the original's
  ``ans2label`` dictionary written as JSON); the answers are taken in the file's order;
* ``.pkl`` / ``.pickle``: the original's pickled ``ans2label`` dictionary
  (``trainval_ans2label.pkl``), read with an unpickler that refuses every class or function, so
  only plain dicts, lists and strings load;
* ``.tsv``: one answer per line in the first column (other columns, such as an index, are ignored);
* anything else (``.txt``): one answer per line.

Blank lines are skipped; an empty or repeated answer is an error naming the file and line.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from openofa.data.records import BadRow
from openofa.errors import OFAError
from openofa.generation.constraints import Trie

__all__ = ["read_answers", "CandidateAnswers", "candidates_from_option"]


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle hook
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _from_pickle(path: Path) -> list[tuple[str, str]]:
    try:
        obj = _NoGlobals(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise OFAError(f"{path}: not a pickled answer dictionary or list ({e})") from None
    return _from_object(obj, path)


def _from_object(obj: Any, path: Path) -> list[tuple[str, str]]:
    if isinstance(obj, Mapping):
        items = list(obj.keys())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    else:
        raise OFAError(f"{path}: expected a list of answers or an {{answer: index}} mapping, "
                       f"got {type(obj).__name__}")
    return [(f"{path}: answer {i + 1}", a) for i, a in enumerate(items)]


def _from_lines(path: Path, tsv: bool) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise OFAError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        answer = line.split("\t")[0] if tsv else line
        if not line.strip():
            continue
        out.append((f"{path}:{lineno}", answer))
    return out


def read_answers(path: str | Path) -> list[str]:
    """The candidate answers of an answer-list file (formats: see the module doc), in order."""
    path = Path(path)
    if not path.is_file():
        raise OFAError(f"answer list not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise OFAError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except UnicodeDecodeError as e:
            raise OFAError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        entries = _from_object(obj, path)
    elif suffix in (".pkl", ".pickle"):
        entries = _from_pickle(path)
    else:
        entries = _from_lines(path, tsv=suffix == ".tsv")
    return _check(entries, str(path))


def _check(entries: Iterable[tuple[str, str]], source: str) -> list[str]:
    seen: dict[str, str] = {}
    out = []
    for where, raw in entries:
        if not isinstance(raw, str):
            raise OFAError(f"{where}: {raw!r} is not a string (in YAML, quote answers such as 'yes' and 'no')")
        answer = raw.strip()
        if not answer:
            raise OFAError(f"{where}: empty answer")
        if answer in seen:
            raise OFAError(f"{where}: answer {answer!r} repeats {seen[answer]}")
        seen[answer] = where
        out.append(answer)
    if not out:
        raise OFAError(f"{source}: no answers")
    return out


class CandidateAnswers:
    """The answers of a closed answer list, their trie, and the constraint masks of targets.

    ``answers``: the answer strings; ``tokenizer``: the :class:`~openofa.text.OFATokenizer`
    whose ids the model uses. Answers are encoded as the sample builders encode targets
    (``" " + answer``) and stored in the trie as ``[bos] + ids + [eos]``, as in the original.
    """

    def __init__(self, answers: Sequence[str], tokenizer, source: str = "answer list") -> None:
        self.answers = _check(((f"{source}: answer {i + 1}", a) for i, a in enumerate(answers)), source)
        self.source = source
        self.bos, self.eos, self.pad = tokenizer.bos, tokenizer.eos, tokenizer.pad
        self.vocab_size = len(tokenizer)
        self.ids = [tokenizer.encode(" " + a) for a in self.answers]
        self.trie = Trie.from_answers(self.ids, bos=self.bos, eos=self.eos)

    def __len__(self) -> int:
        return len(self.answers)

    def target_mask(self, target: torch.Tensor, where: str = "") -> torch.Tensor:
        """``(len(target), vocab)`` bool for one target row: at every position from the first
        non-pad one (where the answer starts; earlier positions are the padded prompt), the
        tokens the trie allows after ``[bos]`` + the target tokens since that position; False at
        the padded positions. A target token the list does not allow there (an answer that is not
        a candidate, or was cut by ``max_tgt_length``) raises :class:`BadRow` (kind ``answers``)."""
        tgt = [int(t) for t in target.tolist()]
        mask = torch.zeros(len(tgt), self.vocab_size, dtype=torch.bool)
        start = next((i for i, t in enumerate(tgt) if t != self.pad), len(tgt))
        state = self.trie.advance(self.trie.root(1), torch.tensor([self.bos]))
        for i in range(start, len(tgt)):
            allowed = self.trie.mask(state, self.vocab_size)[0]
            if not bool(allowed[tgt[i]]):
                raise BadRow(f"{where}: the target answer is not in the candidate list ({self.source}; "
                             f"token {tgt[i]} at answer position {i - start} is not allowed)", "answers")
            mask[i] = allowed
            state = self.trie.advance(state, torch.tensor([tgt[i]]))
        return mask


def candidates_from_option(value: Any, tokenizer) -> CandidateAnswers | None:
    """The data option ``ans2label_file`` (a path) or ``ans2label_dict`` (a list of answers or an
    ``{answer: index}`` mapping given inline) as :class:`CandidateAnswers`; None for None."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return CandidateAnswers(read_answers(value), tokenizer, source=str(value))
    if isinstance(value, Mapping):
        return CandidateAnswers(list(value.keys()), tokenizer, source="ans2label_dict")
    if isinstance(value, (list, tuple)):
        return CandidateAnswers(list(value), tokenizer, source="ans2label_dict")
    raise OFAError(f"a candidate answer list must be a file path, a list or a mapping, got {type(value).__name__}")
