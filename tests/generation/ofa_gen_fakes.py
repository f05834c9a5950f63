"""A small fake model with the openofa decoding interface, and a plain reference beam search.

The fake model's next-token logits are a row of a fixed random table chosen by a hash of
(sentence, whole prefix), so a wrong cache reorder changes the results. The cache also keeps
every row's token history and checks it against the prefix it is fed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

H = 4093  # table rows


@dataclass
class FakeConfig:
    vocab_size: int = 24
    pad: int = 1
    bos: int = 0
    eos: int = 2
    unk: int = 3
    num_bins: int = 6
    max_target_positions: int = 64

    @property
    def bin_0(self) -> int:
        return self.vocab_size - self.num_bins


@dataclass
class FakeEnc:
    sent: torch.Tensor  # (B,) sentence hash

    def index_select(self, idx):
        return FakeEnc(self.sent.index_select(0, idx))


class FakeCache:
    def __init__(self, enc: FakeEnc, beam_size: int, max_len: int):
        self.beam = beam_size
        self.max_len = max_len
        n = enc.sent.numel() * beam_size
        self.sent = enc.sent.repeat_interleave(beam_size)
        self.state = self.sent.clone()
        self.history = torch.zeros(n, 0, dtype=torch.long)
        self.sizes = [n]  # rows after each reorder

    def reorder(self, new_order: torch.Tensor):
        assert new_order.dim() == 1 and new_order.numel() % self.beam == 0
        blocks = torch.div(new_order.view(-1, self.beam), self.beam, rounding_mode="floor")
        assert bool((blocks == blocks[:, :1]).all()), "rows must stay grouped by sentence"
        self.sent = self.sent[new_order]
        self.state = self.state[new_order]
        self.history = self.history[new_order]
        self.sizes.append(new_order.numel())


class FakeModel(torch.nn.Module):
    """``history=False``: logits depend only on (sentence, position)."""

    def __init__(self, vocab_size=24, seed=0, scale=2.0, history=True, bias=None, max_positions=64):
        super().__init__()
        self.config = FakeConfig(vocab_size=vocab_size, max_target_positions=max_positions)
        g = torch.Generator().manual_seed(seed)
        table = torch.randn(H, vocab_size, generator=g) * scale
        if bias is not None:
            table = table + torch.as_tensor(bias, dtype=torch.float32)
        self.register_buffer("table", table)
        self.history = history
        self.encode_calls = 0
        self.last_cache = None

    # hashing -------------------------------------------------------------------------------
    def _next_state(self, state, tok, pos):
        if self.history:
            return (state * 1009 + tok * 7919 + pos * 31 + 17) % H
        return state

    def _row(self, state, pos):
        return (state + pos * 131) % H

    # interface -----------------------------------------------------------------------------
    def encode(self, src_tokens, src_lengths=None, patch_images=None, patch_masks=None):
        self.encode_calls += 1
        w = torch.arange(1, src_tokens.size(1) + 1)
        sent = (src_tokens.long() * w).sum(1) % H
        if patch_images is not None:
            sent = (sent + (patch_images.flatten(1).sum(1) * 1000).long().abs()) % H
        return FakeEnc(sent)

    def init_cache(self, enc, beam_size):
        # the decoder has positions for max_target_positions tokens: never feed more
        self.last_cache = FakeCache(enc, beam_size, self.config.max_target_positions)
        return self.last_cache

    def decode_step(self, tokens, cache):
        pos = tokens.size(1) - 1
        assert tokens.size(0) == cache.state.numel()
        assert pos < cache.max_len, "fed more positions than the decoder has"
        assert torch.equal(cache.history, tokens[:, :-1]), "cache does not match the prefix"
        cache.state = self._next_state(cache.state, tokens[:, -1], pos)
        cache.history = tokens.clone()
        return self.table[self._row(cache.state, pos)].clone()

    def decode(self, prev_output_tokens, enc):
        n, t = prev_output_tokens.shape
        state = enc.sent.clone()
        out = []
        for p in range(t):
            state = self._next_state(state, prev_output_tokens[:, p], p)
            out.append(self.table[self._row(state, p)])
        return torch.stack(out, 1)

    def logits_for(self, sent_hash: int, prefix: list[int]) -> torch.Tensor:
        state = torch.tensor([sent_hash])
        for p, tok in enumerate(prefix):
            state = self._next_state(state, torch.tensor([tok]), p)
        return self.table[self._row(state, len(prefix) - 1)][0].clone()


# ---- plain reference: one sentence at a time, lists and loops -------------------------------
def reference_generate(model, src_tokens, *, beam_size=5, max_len_a=0, max_len_b=200, min_len=1, max_len=None,
                       normalize_scores=True, len_penalty=1.0, unk_penalty=0.0, temperature=1.0,
                       no_repeat_ngram_size=0, constraint_range=None, trie=None, prefix_tokens=None,
                       patch_images=None):
    """Direct transcription of the search rules, used to check the vectorised generator."""
    cfg = model.config
    pad, bos, eos, unk, V = cfg.pad, cfg.bos, cfg.eos, cfg.unk, cfg.vocab_size
    beam = min(beam_size, V - 1)
    cap = max_len if max_len is not None else cfg.max_target_positions - 1
    L = min(int(max_len_a * src_tokens.size(1) + max_len_b), cap)
    sents = model.encode(src_tokens, patch_images=patch_images).sent.tolist()
    results = []
    for b, sh in enumerate(sents):
        pre = prefix_tokens[b].tolist() if prefix_tokens is not None else None
        plen = sum(1 for t in pre if t != pad) if pre is not None else 0
        hyps = [[bos] for _ in range(beam)]
        cum = [[] for _ in range(beam)]
        ignore = [False] * beam
        final = []
        for step in range(L + 1):
            rows = []
            for h in hyps:
                logits = model.logits_for(sh, h) / temperature
                if trie is not None and len(h) > plen:
                    allowed = trie.next_tokens([bos] + h[plen + 1:])
                    m = torch.full((V,), -math.inf)
                    m[allowed] = 0.0
                    logits = logits + m
                forced = pre is not None and step < len(pre) and step < L and pre[step] != pad
                if constraint_range is not None and not forced:  # constraints start after the prefix
                    logits[4:constraint_range[0]] = -math.inf
                    logits[constraint_range[1]:] = -math.inf
                lp = F.log_softmax(logits, -1)
                if pre is not None and step < len(pre) and step < L:
                    if pre[step] != pad:
                        keep = lp[pre[step]].item()
                        lp = torch.full((V,), -math.inf)
                        lp[pre[step]] = keep
                elif step < min_len:
                    lp[eos] = -math.inf
                lp[torch.isnan(lp)] = -math.inf
                lp[pad] = -math.inf
                lp[unk] -= unk_penalty
                if step >= L:
                    keep = lp[eos].item()
                    lp = torch.full((V,), -math.inf)
                    lp[eos] = keep
                n = no_repeat_ngram_size
                if n > 0 and step + 2 - n >= 0 and not forced:  # a forced token is never blocked
                    seen = {}
                    for j in range(len(h) - n + 1):
                        seen.setdefault(tuple(h[j:j + n - 1]), []).append(h[j + n - 1])
                    for t in seen.get(tuple(h[len(h) - (n - 1):]) if n > 1 else (), []):
                        lp[t] = -math.inf
                rows.append(lp)
            lp = torch.stack(rows)
            if step == 0:
                flat = lp[:1].reshape(-1)
            else:
                flat = (lp + torch.tensor([c[-1] for c in cum]).unsqueeze(1)).reshape(-1)
            top_s, top_i = torch.topk(flat, min(2 * beam, flat.numel() - 1))
            cands = [(s, i % V, i // V) for s, i in zip(top_s.tolist(), top_i.tolist())]
            for j, (s, tok, bm) in enumerate(cands[:beam]):
                if tok == eos and s != -math.inf and not ignore[j] and len(final) < beam:
                    c = cum[bm] + [s]
                    pos = [c[0]] + [c[i] - c[i - 1] for i in range(1, len(c))]
                    score = s / (step + 1) ** len_penalty if normalize_scores else s
                    final.append((hyps[bm][1:] + [eos], score, pos))
            if len(final) >= beam or step >= L:
                break
            eos_like = [(tok == eos and s != -math.inf) for s, tok, _ in cands]
            for j in range(beam):
                eos_like[j] = eos_like[j] or ignore[j]
            order = sorted(range(len(cands)), key=lambda j: (eos_like[j], j))[:beam]
            ignore = [eos_like[j] for j in order]
            hyps = [hyps[cands[j][2]] + [cands[j][1]] for j in order]
            cum = [cum[cands[j][2]] + [cands[j][0]] for j in order]
        final.sort(key=lambda x: -x[1])
        results.append(final)
    return results
