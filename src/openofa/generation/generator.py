"""Beam search, greedy decoding and sampling with the same results as the original generator.

The search follows OFA's ``SequenceGenerator`` driven by fairseq's ``BeamSearch`` (or
``Sampling``): decoding starts from bos, each step takes the best ``2 * beam`` candidates,
candidates ending in eos among the first ``beam`` are finalized, the first ``beam`` others
continue, and a sentence is done once it has ``beam`` finalized hypotheses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from openofa.errors import OFAError
from openofa.generation.constraints import NEG_INF, TokenRange, Trie


@dataclass
class GenerationConfig:
    """Search settings; names follow the original's command-line options."""

    beam_size: int = 5
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 1
    max_len: Optional[int] = None  # hard cap; None = model.config.max_target_positions - 1
    normalize_scores: bool = True  # False = the original's --unnormalized
    len_penalty: float = 1.0
    unk_penalty: float = 0.0
    temperature: float = 1.0
    no_repeat_ngram_size: int = 0
    sampling: bool = False
    sampling_topk: int = -1
    sampling_topp: float = -1.0
    constraint_range: Optional[object] = None  # (start, end), "start,end" or TokenRange
    nbest: Optional[int] = None  # hypotheses returned per input; None = beam_size
    seed: Optional[int] = None  # sampling only: seed of a private torch.Generator
    # (bin_0, num_bins): the first four generated tokens (after any prefix) are a box whose x2 and
    # y2 bins are greater than its x1 and y1 bins; the pruned candidates' scores are untouched
    ordered_box: Optional[tuple] = None
    # image codes as the output (text-to-image, infilling): the decoder runs in code mode and, as
    # the original's gen_code, the special ids 0..3 are -inf after the log-softmax until max_len
    gen_code: bool = False

    def __post_init__(self):
        if self.beam_size < 1:
            raise OFAError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.temperature <= 0:
            raise OFAError(f"temperature must be > 0, got {self.temperature}")
        if self.no_repeat_ngram_size < 0 or self.min_len < 0:
            raise OFAError(f"no_repeat_ngram_size and min_len must be >= 0, got {self.no_repeat_ngram_size} "
                           f"and {self.min_len}")
        if self.sampling_topp != -1.0 and not 0.0 < self.sampling_topp <= 1.0:
            raise OFAError(f"sampling_topp must be in (0, 1] (or -1 for none), got {self.sampling_topp}")
        if self.sampling_topk != -1 and self.sampling_topk < 1:
            raise OFAError(f"sampling_topk must be >= 1 (or -1 for none), got {self.sampling_topk}")
        if not self.sampling and (self.sampling_topk > 0 or self.sampling_topp > 0):
            raise OFAError("sampling_topk / sampling_topp need sampling=True")
        if self.constraint_range is not None:
            self.constraint_range = TokenRange.parse(self.constraint_range)


@dataclass
class Hypothesis:
    """One finished output: ``tokens`` end with eos (no bos); ``positional_scores`` are the
    per-token log-probs (eos included); ``score`` is their sum, divided by
    ``len(tokens) ** len_penalty`` when scores are normalized."""

    tokens: torch.Tensor
    score: float
    positional_scores: torch.Tensor


class SequenceGenerator:
    """Batched beam search / sampling over a model exposing ``encode``, ``init_cache``,
    ``decode_step`` and ``config`` (see :mod:`openofa.model`)."""

    def __init__(self, config: GenerationConfig | None = None, **overrides):
        config = config or GenerationConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config

    def max_length(self, src_len: int, model_config) -> int:
        """``min(int(max_len_a * src_len + max_len_b), cap)``; src_len is the padded width."""
        cfg = self.config
        cap = cfg.max_len if cfg.max_len is not None else model_config.max_target_positions - 1
        return min(int(cfg.max_len_a * src_len + cfg.max_len_b), int(cap))

    @torch.no_grad()
    def generate(
        self,
        model,
        src_tokens: torch.Tensor,
        src_lengths: torch.Tensor | None = None,
        patch_images: torch.Tensor | None = None,
        patch_masks: torch.Tensor | None = None,
        prefix_tokens: torch.Tensor | None = None,
        constraints: Trie | None = None,
    ) -> list[list[Hypothesis]]:
        """Return for each input its hypotheses, best first."""
        cfg = self.config
        mcfg = model.config
        pad, bos, eos, unk = int(mcfg.pad), int(mcfg.bos), int(mcfg.eos), int(mcfg.unk)
        vocab = int(mcfg.vocab_size)
        bsz, src_len = src_tokens.shape[:2]
        device = src_tokens.device
        beam = min(cfg.beam_size, vocab - 1)
        max_len = self.max_length(src_len, mcfg)
        if cfg.min_len > max_len:
            raise OFAError(f"min_len {cfg.min_len} is larger than the maximum length {max_len}")
        n_out = beam if cfg.nbest is None else max(1, min(cfg.nbest, beam))
        token_range: TokenRange | None = cfg.constraint_range
        gen = None
        if cfg.sampling and cfg.seed is not None:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(cfg.seed))

        if prefix_tokens is not None:
            prefix_tokens = prefix_tokens.to(device).long()
            if prefix_tokens.dim() != 2 or prefix_tokens.size(0) != bsz:
                raise OFAError(f"prefix_tokens must be (batch, P), got {tuple(prefix_tokens.shape)}")

        enc = model.encode(
            src_tokens, src_lengths=src_lengths, patch_images=patch_images, patch_masks=patch_masks
        )
        if cfg.gen_code:
            cache = model.init_cache(enc, beam_size=beam, code_masks=torch.ones(bsz, dtype=torch.bool, device=device))
        else:
            cache = model.init_cache(enc, beam_size=beam)
        if hasattr(cache, "gen_max_len"):
            cache.gen_max_len = max_len  # the decoder's early-exit schedule depends on it
        # a token range alone (no trie, no prefix): only its ids' logits are computed (the others
        # are -inf before the log-softmax anyway), a fraction of the output projection for image codes
        range_ids = None
        if (token_range is not None and constraints is None and prefix_tokens is None
                and hasattr(model, "output_logits")):
            range_ids = torch.cat([torch.arange(min(4, token_range.start), device=device),
                                   torch.arange(token_range.start, min(token_range.end, vocab), device=device)])
            range_ids = (range_ids, slice(0, min(4, token_range.start)), slice(token_range.start, min(token_range.end, vocab)))
        # and the search itself runs over those ids (the special ids 0..3 keep their indices), mapped
        # back to token ids after each step, when nothing else indexes the vocabulary
        restricted = range_ids is not None and cfg.no_repeat_ngram_size == 0 and cfg.ordered_box is None

        rows = bsz * beam
        tokens = torch.full((rows, max_len + 2), pad, dtype=torch.long, device=device)
        tokens[:, 0] = bos
        scores = torch.zeros(rows, max_len + 1, dtype=torch.float32, device=device)
        ignore = torch.zeros(bsz, beam, dtype=torch.bool, device=device)
        sent_ids = list(range(bsz))  # current batch position -> input index
        finalized: list[list[Hypothesis]] = [[] for _ in range(bsz)]
        finished = [False] * bsz
        remaining = bsz
        cand_size = 2 * beam
        beam_offsets = torch.arange(bsz, device=device).unsqueeze(1) * beam

        trie_state = None
        trie_from = None  # per row: first step at which the trie applies (prefix length)
        if constraints is not None:
            trie_state = constraints.advance(
                constraints.root(rows, device), torch.full((rows,), bos, dtype=torch.long, device=device)
            )
            if prefix_tokens is not None:
                trie_from = prefix_tokens.ne(pad).sum(1).repeat_interleave(beam)
            else:
                trie_from = torch.zeros(rows, dtype=torch.long, device=device)

        box_from = None  # per row: the step at which the box starts (after the prefix)
        if cfg.ordered_box is not None:
            box_from = (prefix_tokens.ne(pad).sum(1).repeat_interleave(beam) if prefix_tokens is not None
                        else torch.zeros(rows, dtype=torch.long, device=device))

        for step in range(max_len + 1):
            forced = None
            if range_ids is not None:
                lprobs = _range_lprobs(model, tokens[:, : step + 1], cache, range_ids, None if restricted else vocab,
                                       cfg.temperature)
            else:
                lprobs, forced = self._lprobs(model, tokens, step, cache, max_len, beam, trie_state, trie_from,
                                              constraints, prefix_tokens, token_range, pad)

            if forced is not None:
                lprobs, tokens, scores, trie_state = self._force_prefix(
                    step, lprobs, scores, tokens, prefix_tokens, beam, pad, eos, trie_state
                )
            elif step < cfg.min_len:
                lprobs[:, eos] = NEG_INF
            if cfg.sampling:  # fully masked rows are NaN; beam search cleans only its candidates
                torch.nan_to_num_(lprobs, nan=NEG_INF, posinf=float("inf"), neginf=NEG_INF)
            lprobs[:, pad] = NEG_INF
            if box_from is not None:
                _order_box_(lprobs, tokens, step, box_from, cfg.ordered_box)
            if cfg.unk_penalty:
                lprobs[:, unk] -= cfg.unk_penalty
            if cfg.gen_code and step < max_len:
                lprobs[:, :4] = NEG_INF
            if step >= max_len:
                lprobs[:, :eos] = NEG_INF
                lprobs[:, eos + 1 :] = NEG_INF
            if cfg.no_repeat_ngram_size > 0:
                # a forced prefix token is never blocked (a prompt may repeat an n-gram)
                kept = lprobs[forced].clone() if forced is not None and bool(forced.any()) else None
                _block_repeated_ngrams(tokens, lprobs, step, cfg.no_repeat_ngram_size, pad)
                if kept is not None:
                    lprobs[forced] = kept

            lprobs3 = lprobs.view(bsz, beam, -1)
            if cfg.sampling:
                cand_scores, cand_tokens, cand_beams = _sampling_step(
                    step, lprobs3, scores.view(bsz, beam, -1), cfg.sampling_topk, cfg.sampling_topp, gen
                )
            else:
                cand_scores, cand_tokens, cand_beams = _beam_step(step, lprobs3, scores.view(bsz, beam, -1))
            if restricted:
                cand_tokens = range_ids[0][cand_tokens]
            cand_rows = cand_beams + beam_offsets

            # candidates ending in eos among the first `beam` are finalized
            eos_mask = cand_tokens.eq(eos) & cand_scores.ne(NEG_INF)
            eos_mask[:, :beam][ignore] = False
            eos_top = eos_mask[:, :beam]
            done_now: list[int] = []
            if bool(eos_top.any()):
                done_now = self._finalize(
                    step,
                    cand_rows[:, :beam][eos_top],
                    cand_scores[:, :beam][eos_top],
                    tokens,
                    scores,
                    sent_ids,
                    finalized,
                    finished,
                    beam,
                    max_len,
                    eos,
                )
                remaining -= len(done_now)
            if remaining == 0 or step >= max_len:
                break

            keep_idx = None
            if done_now:
                keep = torch.ones(bsz, dtype=torch.bool)
                keep[done_now] = False
                keep_list = keep.nonzero().view(-1).tolist()
                keep_idx = torch.tensor(keep_list, dtype=torch.long, device=device)
                sent_ids = [sent_ids[i] for i in keep_list]
                new_bsz = len(keep_list)
                eos_mask = eos_mask[keep_idx]
                cand_beams = cand_beams[keep_idx]
                cand_scores = cand_scores[keep_idx]
                cand_tokens = cand_tokens[keep_idx]
                ignore = ignore[keep_idx]
                if prefix_tokens is not None:
                    prefix_tokens = prefix_tokens[keep_idx]
                beam_offsets = beam_offsets[:new_bsz]
                cand_rows = cand_beams + beam_offsets
                tokens = tokens.view(bsz, -1)[keep_idx].view(new_bsz * beam, -1)
                scores = scores.view(bsz, -1)[keep_idx].view(new_bsz * beam, -1)
                if trie_state is not None:
                    trie_state = trie_state.view(bsz, beam)[keep_idx].view(-1)
                    trie_from = trie_from.view(bsz, beam)[keep_idx].view(-1)
                if box_from is not None:
                    box_from = box_from.view(bsz, beam)[keep_idx].view(-1)
                bsz = new_bsz

            # the first `beam` candidates that do not end (eos or ignored) continue
            eos_mask[:, :beam] |= ignore
            order_key = eos_mask.long() * cand_size + torch.arange(eos_mask.size(1), device=device)
            sel_key, active = torch.topk(order_key, k=beam, dim=1, largest=False)
            ignore = sel_key.ge(cand_size)[:, :beam]
            active_rows = torch.gather(cand_rows, 1, active).view(-1)
            new_tokens = torch.gather(cand_tokens, 1, active).view(-1)

            tokens[:, : step + 1] = tokens[active_rows, : step + 1]
            tokens[:, step + 1] = new_tokens
            if step > 0:
                scores[:, :step] = scores[active_rows, :step]
            scores[:, step] = torch.gather(cand_scores, 1, active).view(-1)
            if trie_state is not None:
                trie_state = trie_state[active_rows]
                walked = constraints.advance(trie_state, new_tokens)
                trie_state = torch.where(trie_from <= step, walked, trie_state)

            if keep_idx is not None:
                old_rows = (keep_idx.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
                cache.reorder(old_rows[active_rows])
            else:
                cache.reorder(active_rows)

        out: list[list[Hypothesis]] = []
        for hyps in finalized:
            if hyps:
                key = torch.tensor([h.score for h in hyps], dtype=torch.float32)
                order = torch.sort(key, descending=True, stable=True)[1].tolist()
                hyps = [hyps[i] for i in order]
            out.append(hyps[:n_out])
        return out


    def _lprobs(self, model, tokens, step, cache, max_len, beam, trie_state, trie_from, constraints,
                prefix_tokens, token_range, pad):
        """Log-probs of the next token over the whole vocabulary (temperature, trie and token
        range applied to the logits first), and the rows a prefix forces at this step (or None)."""
        cfg = self.config
        logits = model.decode_step(tokens[:, : step + 1], cache)
        if cfg.temperature != 1.0:
            logits = logits / cfg.temperature
        if trie_state is not None:
            allowed = constraints.mask(trie_state, logits.size(-1))
            allowed |= (trie_from > step).unsqueeze(1)
            logits = logits.masked_fill(~allowed, NEG_INF)
        # rows whose prefix forces this step's token: constraints start after the prefix
        forced = None
        if prefix_tokens is not None and step < prefix_tokens.size(1) and step < max_len:
            forced = prefix_tokens[:, step].ne(pad).repeat_interleave(beam)
        if token_range is not None and forced is None:
            logits = token_range.apply_(logits.clone() if trie_state is None else logits)
        elif token_range is not None:  # forced rows keep their logits
            logits = torch.where(forced.unsqueeze(1), logits, token_range.apply_(logits.clone()))
        lprobs = F.log_softmax(logits.float(), dim=-1)
        return lprobs, forced

    # ---------------------------------------------------------------------------------------
    def _finalize(self, step, rows, eos_scores, tokens, scores, sent_ids, finalized, finished, beam, max_len, eos):
        """Store the hypotheses that end at this step; return batch positions now finished."""
        cfg = self.config
        toks = tokens.index_select(0, rows)[:, 1 : step + 2]
        toks[:, step] = eos
        cum = scores.index_select(0, rows)[:, : step + 1]
        cum[:, step] = eos_scores
        pos = cum.clone()
        pos[:, 1:] = cum[:, 1:] - cum[:, :-1]
        if cfg.normalize_scores:
            eos_scores = eos_scores / (step + 1) ** cfg.len_penalty
        toks, pos = toks.cpu(), pos.cpu()
        batch_pos = (rows // beam).tolist()
        final_scores = eos_scores.tolist()
        for i, b in enumerate(batch_pos):
            hyps = finalized[sent_ids[b]]
            if len(hyps) < beam:
                hyps.append(Hypothesis(tokens=toks[i], score=final_scores[i], positional_scores=pos[i]))
        done = []
        for b in sorted(set(batch_pos)):
            s = sent_ids[b]
            if not finished[s] and (len(finalized[s]) == beam or step == max_len):
                finished[s] = True
                done.append(b)
        return done

    @staticmethod
    def _force_prefix(step, lprobs, scores, tokens, prefix_tokens, beam, pad, eos, trie_state):
        forced = prefix_tokens[:, step].repeat_interleave(beam)
        forced_lp = lprobs.gather(1, forced.unsqueeze(1))
        on = forced.ne(pad)
        if bool(on.any()):
            sub = torch.full_like(lprobs[on], NEG_INF)
            sub.scatter_(1, forced[on].unsqueeze(1), forced_lp[on])
            lprobs[on] = sub
        ends = forced.eq(eos).view(-1, beam)[:, 0]
        if bool(ends.any()):
            # a prefix containing eos: every beam of that sentence copies the first beam
            def first_beam(t):
                t3 = t.view(-1, beam, t.size(-1))
                t3[ends] = t3[ends][:, :1, :]
                return t3.view(-1, t.size(-1))

            tokens = first_beam(tokens)
            scores = first_beam(scores)
            lprobs = first_beam(lprobs)
            if trie_state is not None:
                trie_state = first_beam(trie_state.unsqueeze(1)).view(-1)
        return lprobs, tokens, scores, trie_state


def _beam_step(step: int, lprobs: torch.Tensor, scores: torch.Tensor):
    """fairseq BeamSearch.step: top 2*beam over (beam x vocab) of cumulative scores.

    A beam's score is the same for all its tokens, so the best 2*beam of a sentence are among the
    best 2*beam log-probs of each of its beams: two small top-k passes, and the scores added to
    those candidates only, instead of offsetting the whole vocabulary and ranking beam x vocab
    (same values: each candidate is ``lprob + score`` as before). NaN log-probs (rows that were
    fully masked) become -inf candidates."""
    bsz, beam, vocab = lprobs.shape
    if step == 0:
        lprobs = lprobs[:, :1]  # all beams are identical at the start
    rows = lprobs.size(1)
    k = min(2 * beam, rows * vocab - 1)
    if k >= vocab:  # a vocabulary smaller than the candidate count (toy models): rank all of it
        if step > 0:
            lprobs = lprobs + scores[:, :, step - 1].unsqueeze(-1)
        top_scores, top_idx = torch.topk(_clean(lprobs.reshape(bsz, -1)), k=k)
        return top_scores, top_idx.fmod(vocab), torch.div(top_idx, vocab, rounding_mode="floor")
    row_scores, row_idx = torch.topk(lprobs, k=k, dim=2)  # (bsz, rows, k), best first
    row_scores = _clean(row_scores)
    if step > 0:
        row_scores = row_scores + scores[:, :, step - 1].unsqueeze(-1)
    if rows == 1:
        return row_scores[:, 0], row_idx[:, 0], row_idx.new_zeros(bsz, k)
    top_scores, pick = torch.topk(row_scores.view(bsz, -1), k=k)
    beams = torch.div(pick, k, rounding_mode="floor")
    return top_scores, row_idx.view(bsz, -1).gather(1, pick), beams


def _range_lprobs(model, prefix: torch.Tensor, cache, rng: tuple, vocab: int, temperature: float):
    """Log-probs over the vocabulary when only the ids of ``rng`` (ids, special slice, range
    slice) are allowed: their logits alone are computed, from the weight's rows in place, and
    normalised (the others would be -inf before the log-softmax), the rest -inf; with ``vocab``
    None, over the allowed ids only (N, len(ids))."""
    ids, specials, allowed = rng
    feats = model.decode_step(prefix, cache, features_only=True)
    logits = torch.cat([model.output_logits(feats, specials), model.output_logits(feats, allowed)], -1).float()
    if temperature != 1.0:
        logits = logits / temperature
    if vocab is None:  # stay in the range's own index space (ids[i] is the token of index i)
        return F.log_softmax(logits, dim=-1)
    out = torch.full((logits.shape[0], vocab), NEG_INF, dtype=torch.float32, device=logits.device)
    out.index_copy_(1, ids, F.log_softmax(logits, dim=-1))
    return out


def _clean(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x, nan=NEG_INF, posinf=float("inf"), neginf=NEG_INF)


def _sampling_step(step, lprobs, scores, topk: int, topp: float, gen):
    """fairseq Sampling.step: one sample per beam (beam samples of the first beam at step 0)."""
    bsz, beam, vocab = lprobs.shape
    if step == 0:
        lprobs = lprobs[:, ::beam, :].contiguous()
    top_indices = None
    if topp > 0:
        probs, top_indices = _topp_probs(lprobs, topp)
    elif topk > 0:
        lp, top_indices = lprobs.topk(topk)
        probs = lp.exp()
    else:
        probs = lprobs.exp()
    if step == 0:
        picked = torch.multinomial(probs.view(bsz, -1), beam, replacement=True, generator=gen).view(bsz, beam)
        probs = probs.expand(bsz, beam, -1)
    else:
        picked = torch.multinomial(probs.view(bsz * beam, -1), 1, replacement=True, generator=gen).view(bsz, beam)
    cand_scores = torch.gather(probs, 2, picked.unsqueeze(-1)).log().view(bsz, -1)
    if top_indices is not None:
        picked = torch.gather(top_indices.expand(bsz, beam, -1), 2, picked.unsqueeze(-1)).squeeze(2)
    if step == 0:
        beams = picked.new_zeros(bsz, beam)
    else:
        beams = torch.arange(beam, device=picked.device).repeat(bsz, 1)
        cand_scores = cand_scores + torch.gather(scores[:, :, step - 1], 1, beams)
    return cand_scores, picked, beams


def _topp_probs(lprobs: torch.Tensor, topp: float):
    """Nucleus: the smallest head of the sorted distribution whose mass reaches ``topp``."""
    probs = lprobs.exp()
    sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
    inside = sorted_probs.cumsum(dim=-1).lt(topp)
    last = inside.long().cumsum(dim=-1)[:, :, -1:].clamp(0, inside.size(-1) - 1)
    inside = inside.scatter(2, last, True)
    width = int(last.max()) + 1
    kept = sorted_probs[:, :, :width].masked_fill(~inside[:, :, :width], 0.0)
    return kept, sorted_idx[:, :, :width]


def _order_box_(lprobs: torch.Tensor, tokens: torch.Tensor, step: int, box_from: torch.Tensor, rng) -> None:
    """Prune, in place, the candidates that would make the box ``x1 y1 x2 y2`` starting at
    ``box_from`` empty or inverted: x1 and y1 may not be the last bin, and x2 (y2) must be a
    greater bin than x1 (y1) when that was a bin."""
    bin_0, num_bins = int(rng[0]), int(rng[1])
    k = step - box_from
    first = (k == 0) | (k == 1)
    if bool(first.any()):
        lprobs[first, bin_0 + num_bins - 1] = NEG_INF
    second = (k == 2) | (k == 3)
    if step >= 2 and bool(second.any()):
        ref = tokens[:, step - 1]  # x1 (y1): generated two steps ago
        rows = second & (ref >= bin_0) & (ref < bin_0 + num_bins)
        if bool(rows.any()):
            ids = torch.arange(lprobs.size(1), device=lprobs.device)
            mask = rows.unsqueeze(1) & (ids >= bin_0).unsqueeze(0) & (ids.unsqueeze(0) <= ref.unsqueeze(1))
            lprobs.masked_fill_(mask, NEG_INF)


def _block_repeated_ngrams(tokens: torch.Tensor, lprobs: torch.Tensor, step: int, n: int, pad: int) -> None:
    """Set -inf for every token that would repeat an n-gram of ``tokens[:, :step+1]`` (bos
    included). In place. The pad id doubles as the no-op target (pad is already -inf)."""
    if step + 2 - n <= 0:  # no complete n-gram yet
        return
    hist = tokens[:, : step + 1]
    windows = hist.unfold(1, n, 1)  # (rows, step+2-n, n)
    if n > 1:
        tail = hist[:, step + 2 - n :]
        match = windows[:, :, :-1].eq(tail.unsqueeze(1)).all(-1)
    else:
        match = torch.ones(windows.shape[:2], dtype=torch.bool, device=tokens.device)
    banned = windows[:, :, -1].masked_fill(~match, pad)
    lprobs.scatter_(1, banned, NEG_INF)


def generate(model, src_tokens, src_lengths=None, config: GenerationConfig | None = None, **kwargs):
    """Shortcut: ``SequenceGenerator(config).generate(model, src_tokens, src_lengths, **kwargs)``."""
    return SequenceGenerator(config).generate(model, src_tokens, src_lengths, **kwargs)
