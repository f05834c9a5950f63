"""Score fixed candidate outputs with teacher forcing (VQA all-candidate, entailment, classes)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from openofa.errors import OFAError
from openofa.generation.constraints import NEG_INF, Trie


def _ids(seq) -> list[int]:
    if isinstance(seq, torch.Tensor):
        return [int(x) for x in seq.reshape(-1).tolist()]
    return [int(x) for x in seq]


def _is_sequence_of_ids(x) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() <= 1
    return all(isinstance(v, int) or (isinstance(v, torch.Tensor) and v.dim() == 0) for v in x)


#: at most this many float elements in one decoding step's cross-attention bias for a group of
#: candidates (128 MB in float32), which sets how many candidates of one input are scored at once
GROUP_BIAS_ELEMENTS = 2 ** 25


@torch.no_grad()
def score_candidates(
    model,
    src_tokens: torch.Tensor,
    candidates,
    src_lengths: torch.Tensor | None = None,
    patch_images: torch.Tensor | None = None,
    patch_masks: torch.Tensor | None = None,
    *,
    prompts: Sequence[Sequence[int]] | None = None,
    constraints: Trie | None = None,
    reduction: str = "sum",
    append_eos: bool = True,
    chunk_size: int = 512,
):
    """Log-probability of candidate outputs under teacher forcing; one encoder pass per input.

    ``candidates`` is either one shared list of token-id sequences (an answer list, used for
    every input; returns a (B, C) tensor) or a list of B such lists (returns a list of B
    1-D tensors). Candidates hold output ids without bos; eos is appended unless
    ``append_eos=False``. The score covers every candidate token and the eos; ``reduction``
    is ``"sum"`` or ``"mean"`` (per scored token).

    ``prompts`` (optional, one per input, ids without bos) are fed to the decoder before the
    candidate but not scored, like the original's ``decoder_prompts``. ``constraints`` (a
    :class:`Trie` over ``[bos] + answer + [eos]``) masks the logits at each scored position to
    the tokens allowed after ``[bos] + candidate[:i]`` before log_softmax, as the original's
    VQA all-candidate evaluation does.
    """
    if reduction not in ("sum", "mean"):
        raise OFAError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    cfg = model.config
    pad, bos, eos = int(cfg.pad), int(cfg.bos), int(cfg.eos)
    bsz = src_tokens.size(0)
    device = src_tokens.device

    shared = len(candidates) == 0 or _is_sequence_of_ids(candidates[0])
    if shared:
        per_input = [[_ids(c) for c in candidates] for _ in range(bsz)]
    else:
        if len(candidates) != bsz:
            raise OFAError(f"got {len(candidates)} candidate lists for {bsz} inputs")
        per_input = [[_ids(c) for c in group] for group in candidates]
    if prompts is not None and len(prompts) != bsz:
        raise OFAError(f"got {len(prompts)} prompts for {bsz} inputs")
    prompt_ids = [_ids(p) for p in prompts] if prompts is not None else [[] for _ in range(bsz)]

    # flat list of (input index, prompt, candidate)
    items = [(i, prompt_ids[i], c) for i in range(bsz) for c in per_input[i]]
    flat = torch.empty(len(items), dtype=torch.float32)
    if items:
        enc = model.encode(
            src_tokens, src_lengths=src_lengths, patch_images=patch_images, patch_masks=patch_masks
        )
        if hasattr(model, "output_logits"):  # our model: an input's candidates share its encoding and prompt
            # a step's shared cross-attention bias is rows x keys x heads floats: bound it
            heads, keys = int(model.config.decoder_attention_heads), enc.hidden.shape[1]
            rows = max(1, min(chunk_size, GROUP_BIAS_ELEMENTS // (keys * heads)))
            done = 0
            for i in range(bsz):
                one = enc.index_select(torch.tensor([i], device=device))
                n = len(per_input[i])
                for start in range(0, n, rows):
                    part = items[done + start : done + min(n, start + rows)]
                    flat[done + start : done + start + len(part)] = _score_group(
                        model, one, part, pad, bos, eos, constraints, reduction, append_eos, device)
                done += n
        else:
            for start in range(0, len(items), max(1, chunk_size)):
                part = items[start : start + chunk_size]
                flat[start : start + len(part)] = _score_chunk(
                    model, enc, part, pad, bos, eos, constraints, reduction, append_eos, device
                )

    sizes = [len(g) for g in per_input]
    groups = list(torch.split(flat, sizes)) if items else [flat.new_empty(0) for _ in sizes]
    if shared:
        return torch.stack(groups) if bsz else flat.new_empty(0, len(candidates))
    return groups


def _batch(part, pad, bos, eos, append_eos, device):
    """Decoder inputs, targets and the mask of scored positions of (input, prompt, candidate) items."""
    prev_rows, tgt_rows, first_scored = [], [], []
    for _, prompt, cand in part:
        target = cand + [eos] if append_eos else list(cand)
        prev_rows.append([bos] + prompt + target[:-1])
        tgt_rows.append(prompt + target)
        first_scored.append(len(prompt))
    width = max(len(r) for r in tgt_rows)
    prev = torch.full((len(part), width), pad, dtype=torch.long)
    tgt = torch.full((len(part), width), pad, dtype=torch.long)
    scored = torch.zeros(len(part), width, dtype=torch.bool)
    for r, (p, t, f) in enumerate(zip(prev_rows, tgt_rows, first_scored)):
        prev[r, : len(p)] = torch.tensor(p, dtype=torch.long)
        tgt[r, : len(t)] = torch.tensor(t, dtype=torch.long)
        scored[r, f : len(t)] = True
    return prev.to(device), tgt.to(device), scored.to(device), first_scored


def _walk_trie(trie, tgt, first_scored, bos, vocab_size, columns=None):
    """Per position j, the (rows, V) mask of tokens the trie allows after [bos] + candidate[:j - first]
    (all True before a row's first scored position); ``columns`` keeps those vocabulary columns only."""
    n, width = tgt.shape
    device = tgt.device
    state = trie.advance(trie.root(n, device), torch.full((n,), bos, device=device))
    firsts = torch.tensor(first_scored, device=device)
    masks = []
    for j in range(width):
        at = firsts <= j
        m = trie.mask(state, vocab_size)
        if columns is not None:
            m = m[:, columns]
        masks.append(torch.where(at.unsqueeze(1), m, torch.ones_like(m)))
        state = torch.where(at, trie.advance(state, tgt[:, j]), state)
    return torch.stack(masks, 1)


def _score_group(model, enc, part, pad, bos, eos, trie, reduction, append_eos, device):
    """:func:`_score_chunk` for candidates of one input (one prompt): the prompt is decoded once
    with the cache, which is then copied to every candidate (``DecoderCache.expand``) and fed
    the candidates' tokens a step at a time, all sharing the input's cross-attention keys and
    values. Only scored positions are projected to the vocabulary, and with a trie only onto
    the tokens it holds (the others get -inf before the log-softmax). The scores equal teacher
    forcing up to float rounding."""
    prompt = [bos] + part[0][1]
    # the candidates' targets alone (the prompt is decoded once below)
    _, tgt, scored, _ = _batch([(i, [], c) for i, _, c in part], pad, bos, eos, append_eos, device)
    n, width = tgt.shape
    if width == 0:
        return torch.zeros(n)

    cache = model.init_cache(enc, beam_size=1)
    seq = torch.tensor([prompt], dtype=torch.long, device=device)
    for t in range(len(prompt)):
        first = model.decode_step(seq[:, : t + 1], cache, features_only=True)  # predicts target[0]
    cache.expand(n)
    tokens = torch.cat([seq.expand(n, -1), tgt], 1)
    feats = [first.expand(n, -1)]
    for j in range(width - 1):  # feeding target[j] predicts target[j + 1]
        feats.append(model.decode_step(tokens[:, : len(prompt) + j + 1], cache, features_only=True))
    feats = torch.stack(feats, 1)[scored]  # (M, C)
    picked = tgt[scored]
    if trie is None:
        lprobs = F.log_softmax(model.output_logits(feats).float(), dim=-1)
        tok_scores = lprobs.gather(-1, picked.unsqueeze(-1)).squeeze(-1)
    else:
        vocab = trie.tokens().to(device)
        logits = model.output_logits(feats, vocab).float()
        allowed = _walk_trie(trie, tgt, [0] * n, bos, int(model.config.vocab_size), vocab)[scored]
        lprobs = F.log_softmax(logits.masked_fill(~allowed, NEG_INF), dim=-1)
        column = torch.searchsorted(vocab, picked).clamp(max=vocab.numel() - 1)
        tok_scores = lprobs.gather(-1, column.unsqueeze(-1)).squeeze(-1)
        tok_scores = tok_scores.masked_fill(vocab[column] != picked, NEG_INF)  # a token outside the trie
    total = torch.zeros(n, device=device).index_add_(0, scored.nonzero()[:, 0], tok_scores)
    if reduction == "mean":
        total = total / scored.sum(1).clamp(min=1)
    return total.cpu()


def _score_chunk(model, enc, part, pad, bos, eos, trie, reduction, append_eos, device):
    prev, tgt, scored, first_scored = _batch(part, pad, bos, eos, append_eos, device)
    if tgt.shape[1] == 0:
        return torch.zeros(len(part))
    rows = torch.tensor([i for i, _, _ in part], dtype=torch.long, device=device)
    logits = model.decode(prev, enc.index_select(rows)).float()
    if trie is not None:
        # walk [bos] + candidate tokens (the prompt is skipped, as in the original)
        logits = logits.masked_fill(~_walk_trie(trie, tgt, first_scored, bos, logits.size(-1)), NEG_INF)
    lprobs = F.log_softmax(logits, dim=-1)
    tok_scores = lprobs.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).masked_fill(~scored, 0.0)
    total = tok_scores.sum(1)
    if reduction == "mean":
        total = total / scored.sum(1).clamp(min=1)
    return total.cpu()
