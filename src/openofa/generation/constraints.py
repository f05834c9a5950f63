"""Decoding constraints: a prefix trie of allowed token sequences, and a token id range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from openofa.errors import OFAError

NEG_INF = float("-inf")


def _as_list(seq) -> list[int]:
    if isinstance(seq, torch.Tensor):
        return [int(x) for x in seq.reshape(-1).tolist()]
    return [int(x) for x in seq]


class Trie:
    """Prefix tree over token sequences.

    ``next_tokens(prefix)`` lists the tokens that may follow ``prefix``. A prefix that leaves
    the tree allows only ``eos`` (so a stray hypothesis can still end); a prefix that reaches
    the end of a stored sequence allows nothing.

    For VQA the stored sequences are ``[bos] + answer_ids + [eos]`` (see :meth:`from_answers`)
    and the generator queries with ``[bos] + generated_tokens``.

    The batched methods work on integer node states: ``root(n)`` gives ``n`` states at the
    root, ``advance(states, tokens)`` follows one token per state and ``mask(states, V)``
    returns the (n, V) bool mask of allowed next tokens.
    """

    def __init__(self, sequences: Iterable[Sequence[int]] = (), eos: int = 2):
        self.eos = int(eos)
        self._children: list[dict[int, int]] = [{}]
        self._compiled: dict | None = None
        for seq in sequences:
            self.insert(seq)

    @classmethod
    def from_answers(cls, answers: Iterable[Sequence[int]], bos: int = 0, eos: int = 2) -> "Trie":
        """Trie holding ``[bos] + answer + [eos]`` for every answer (token id lists)."""
        return cls(([bos] + _as_list(a) + [eos] for a in answers), eos=eos)

    def insert(self, seq: Sequence[int]) -> None:
        node = 0
        for tok in _as_list(seq):
            if tok < 0:
                raise OFAError(f"Trie: negative token id {tok}")
            child = self._children[node].get(tok)
            if child is None:
                child = len(self._children)
                self._children.append({})
                self._children[node][tok] = child
            node = child
        self._compiled = None

    def __len__(self) -> int:
        """Number of nodes, root included."""
        return len(self._children)

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        node = 0
        for tok in _as_list(prefix):
            node = self._children[node].get(tok)
            if node is None:
                return [self.eos]
        return list(self._children[node].keys())

    # ---- batched, tensor based ---------------------------------------------------------------
    def _tables(self, device: torch.device) -> dict:
        if self._compiled is None:
            n = len(self._children)
            dead = n  # extra state: the prefix left the tree; only eos may follow, forever
            width = max([self.eos] + [t for ch in self._children for t in ch]) + 1
            keys, dest, toks = [], [], []
            for node, ch in enumerate(self._children):
                for tok in sorted(ch):
                    keys.append(node * width + tok)
                    dest.append(ch[tok])
                    toks.append(tok)
            keys.append(dead * width + self.eos)
            dest.append(dead)
            toks.append(self.eos)
            keys_t = torch.tensor(keys, dtype=torch.long)
            starts = torch.searchsorted(keys_t, torch.arange(n + 2, dtype=torch.long) * width)
            self._compiled = {
                "cpu": {
                    "keys": keys_t,
                    "dest": torch.tensor(dest, dtype=torch.long),
                    "toks": torch.tensor(toks, dtype=torch.long),
                    "starts": starts,
                },
                "width": width,
                "dead": dead,
            }
        comp = self._compiled
        key = str(device)
        if key not in comp:
            comp[key] = {k: v.to(device) for k, v in comp["cpu"].items()}
        return comp

    def root(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long, device=device)

    def advance(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Follow ``tokens[i]`` from ``states[i]``; leaving the tree gives the dead state."""
        comp = self._tables(states.device)
        t = comp[str(states.device)]
        width, dead = comp["width"], comp["dead"]
        tokens = tokens.to(states.device).long()
        valid = (tokens >= 0) & (tokens < width)
        key = states * width + tokens.clamp(0, width - 1)
        pos = torch.searchsorted(t["keys"], key).clamp(max=t["keys"].numel() - 1)
        hit = valid & (t["keys"][pos] == key)
        return torch.where(hit, t["dest"][pos], torch.full_like(states, dead))

    def tokens(self) -> torch.Tensor:
        """Every token id that some state allows (eos included), sorted."""
        return torch.unique(self._tables(torch.device("cpu"))["cpu"]["toks"])

    def mask(self, states: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """(n, vocab_size) bool: True where the token may follow the state."""
        comp = self._tables(states.device)
        t = comp[str(states.device)]
        if comp["width"] > vocab_size:
            raise OFAError(f"Trie holds token id {comp['width'] - 1} >= vocab size {vocab_size}")
        n = states.numel()
        out = torch.zeros(n, vocab_size, dtype=torch.bool, device=states.device)
        if n == 0:
            return out
        uniq, inverse = torch.unique(states, return_inverse=True)
        begin = t["starts"][uniq]
        count = t["starts"][uniq + 1] - begin
        total = int(count.sum())
        if total == 0:
            return out
        owner = torch.repeat_interleave(torch.arange(uniq.numel(), device=states.device), count)
        first = torch.cumsum(count, 0) - count
        edge = torch.arange(total, device=states.device) - first[owner] + begin[owner]
        small = torch.zeros(uniq.numel(), vocab_size, dtype=torch.bool, device=states.device)
        small[owner, t["toks"][edge]] = True
        return small[inverse]

    def walk(self, prefixes) -> torch.Tensor:
        """States after walking each prefix from the root (LongTensor (n, L) or list of lists)."""
        if isinstance(prefixes, torch.Tensor):
            rows = prefixes.long()
            states = self.root(rows.size(0), rows.device)
            for j in range(rows.size(1)):
                states = self.advance(states, rows[:, j])
            return states
        rows = [_as_list(p) for p in prefixes]
        states = self.root(len(rows))
        longest = max((len(r) for r in rows), default=0)
        for j in range(longest):
            live = torch.tensor([j < len(r) for r in rows], dtype=torch.bool)
            toks = torch.tensor([r[j] if j < len(r) else 0 for r in rows], dtype=torch.long)
            states = torch.where(live, self.advance(states, toks), states)
        return states

    def allowed_mask(self, prefixes, vocab_size: int) -> torch.Tensor:
        """(n, vocab_size) bool mask of the tokens allowed after each prefix."""
        return self.mask(self.walk(prefixes), vocab_size)


@dataclass(frozen=True)
class TokenRange:
    """Allow only ids in ``[start, end)`` plus the four special ids 0..3 (bos, pad, eos, unk).

    As in the original's ``constraint_range``: logits ``[4:start]`` and ``[end:]`` are set to
    -inf before log_softmax. ``TokenRange.bins(config)`` gives the location tokens.
    """

    start: int
    end: int

    def __post_init__(self):
        if not 4 <= self.start <= self.end:
            raise OFAError(f"TokenRange: need 4 <= start <= end, got ({self.start}, {self.end})")

    @classmethod
    def bins(cls, config) -> "TokenRange":
        return cls(int(config.bin_0), int(config.vocab_size))

    @classmethod
    def parse(cls, value) -> "TokenRange":
        """From a TokenRange, a (start, end) pair or the original's ``"start,end"`` string."""
        if isinstance(value, TokenRange):
            return value
        if isinstance(value, str):
            parts = value.split(",")
            if len(parts) != 2:
                raise OFAError(f"constraint_range {value!r}: expected 'start,end'")
            return cls(int(parts[0]), int(parts[1]))
        start, end = value
        return cls(int(start), int(end))

    def apply_(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask ``logits[..., 4:start]`` and ``logits[..., end:]`` in place; returns logits."""
        logits[..., 4 : self.start] = NEG_INF
        logits[..., self.end :] = NEG_INF
        return logits

    def mask(self, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        out = torch.ones(vocab_size, dtype=torch.bool, device=device)
        out[4 : self.start] = False
        out[self.end :] = False
        return out
