"""The OFA decoder, teacher-forced or one step at a time with a KV cache.

Decoder inputs get ``embed_tokens + embed_positions`` then ``layernorm_embedding``; with
``disable_entangle`` (every released checkpoint) the position embedding is not added. Each layer's
self-attention bias is ``self_pos_q(pos_ln(P)) @ self_pos_k(pos_ln(P))^T`` plus the per-layer
relative text bias; the cross-attention bias is ``cross_pos_q(pos_ln(P)) @ cross_pos_k(E)^T`` with
E the encoder's normalised position embeddings. Output logits use the shared token embedding.

Rows whose target is image codes (``code_masks``, one flag per row: image infilling, text-to-image)
are placed on the code grid instead: P comes from ``embed_image_positions`` at the ids of
:func:`~openofa.model.positions.code_position_ids` and is normalised by ``image_pos_ln``, the
input embedding is normalised by ``code_layernorm_embedding``, and the per-layer relative bias
comes from ``image_rel_pos_table_list`` with 2-D offsets between grid cells. In a batch that mixes
code and text rows each row takes its own kind; a batch without code rows computes exactly what it
computed before.

:class:`DecoderCache` holds, per layer, the self-attention keys/values of earlier steps (in
preallocated buffers) and the cross-attention keys/values, computed once per input and shared by
all beams of that input (beams are folded into the query axis instead of copying them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from openofa.config import OFAConfig
from openofa.model.early_exit import fill_skipped_cache
from openofa.model.encoder import EncoderOutput, key_padding_bias
from openofa.model.layers import DecoderLayer
from openofa.model.linear import Linear
from openofa.model.prompt import prompt_encoder_for
from openofa.model.positions import (code_position_ids, image_rel_bucket_of_ids, image_rel_table_rows,
                                     token_rel_bucket)


@dataclass
class CrossAttention:
    """One decoder layer's cross-attention, from a teacher-forced forward that asked for it."""

    weights: torch.Tensor  # (B, H, T, S) float32 probabilities over the encoder positions
    image_grid: tuple[int, int] | None  # patches are encoder positions [0, rows * columns), row-major


class _SelfKV:
    """Preallocated self-attention keys/values of one layer: (N, H, max_len, d)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, h, t, d = k.shape
        end = self.length + t
        if self.k is None or end > self.k.shape[2]:
            cap = max(end, 2 * (self.k.shape[2] if self.k is not None else 16))
            k_new, v_new = k.new_empty(n, h, cap, d), v.new_empty(n, h, cap, d)
            if self.k is not None:
                k_new[:, :, : self.length] = self.k[:, :, : self.length]
                v_new[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = k_new, v_new
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, order: torch.Tensor) -> None:
        if self.k is not None:
            self.k = self.k.index_select(0, order)
            self.v = self.v.index_select(0, order)


class DecoderCache:
    """Incremental-decoding state for N = B * group decoder rows (row r decodes input r // group)."""

    def __init__(self, enc: EncoderOutput, cross_kv: list[tuple[torch.Tensor, torch.Tensor]],
                 cross_pos_k: torch.Tensor, group: int, code_masks: torch.Tensor | None = None) -> None:
        self.enc = enc
        self.code_masks = code_masks  # (B,) bool per input, or None: no input decodes image codes
        self.cross_kv = cross_kv
        self.cross_pos_k = cross_pos_k  # (B, H, S, d)
        self.enc_pad_bias = key_padding_bias(enc.padding_mask, cross_pos_k.dtype)  # (B, 1, 1, S)
        self.group = group
        self.self_kv = [_SelfKV() for _ in cross_kv]
        self.prefix_len = 0  # prefix-tuning keys at the front of self_kv (no position bias)
        self.step = 0
        self.gen_max_len: int | None = None  # the generator's maximum length (early exit's schedule)
        # position biases of text rows for steps [bias_start, bias_start + CHUNK), computed a
        # chunk at a time (see Decoder._step_biases): per layer self (1, H, CHUNK, K), cross (B, H, CHUNK, S)
        self.bias_start = 0
        self.self_biases: list[torch.Tensor] = []
        self.cross_biases: torch.Tensor | None = None
        # inputs that all decode image codes: the projected image positions of the whole grid,
        # computed at the first step (see Decoder._code_step_biases)
        self.code_positions: tuple | None = None

    @property
    def num_rows(self) -> int:
        return self.enc.batch_size * self.group

    def expand(self, n: int) -> None:
        """Each row becomes ``n`` identical rows (a prefix decoded once, continued n ways): the
        rows of an input form one group of ``n`` that shares its cross-attention keys/values."""
        if self.group != 1:
            raise ValueError(f"expand needs one row per input, the cache has groups of {self.group}")
        rows = torch.arange(self.num_rows, device=self.cross_pos_k.device).repeat_interleave(n)
        for kv in self.self_kv:
            kv.reorder(rows)
        self.group = n

    def reorder(self, new_order: torch.Tensor) -> None:
        """Row i of the new state is old row ``new_order[i]``; rows must stay grouped by input."""
        if new_order.numel() == self.num_rows and torch.equal(
                new_order, torch.arange(new_order.numel(), device=new_order.device)):
            return  # every row stays (sampling): nothing to copy
        for kv in self.self_kv:
            kv.reorder(new_order)
        inputs = new_order.view(-1, self.group)[:, 0] // self.group
        if inputs.numel() != self.enc.batch_size or not torch.equal(
                inputs, torch.arange(inputs.numel(), device=inputs.device)):
            self.enc = self.enc.index_select(inputs)
            self.cross_kv = [(k.index_select(0, inputs), v.index_select(0, inputs)) for k, v in self.cross_kv]
            self.cross_pos_k = self.cross_pos_k.index_select(0, inputs)
            self.enc_pad_bias = self.enc_pad_bias.index_select(0, inputs)
            if self.cross_biases is not None:
                self.cross_biases = self.cross_biases.index_select(0, inputs)
            if self.code_masks is not None:
                self.code_masks = self.code_masks.index_select(0, inputs)


class Decoder(nn.Module):
    exit_rule = None  # an early_exit.ExitRule when MuE early exit is on (inference)

    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        self.cfg = cfg
        dim, heads = cfg.decoder_embed_dim, cfg.decoder_attention_heads
        self.num_heads = heads
        self.pos_scaling = (dim / heads * cfg.attn_scale_factor) ** -0.5
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(dim)
        self.code_layernorm_embedding = nn.LayerNorm(dim)  # used only when decoding image codes
        self.embed_positions = nn.Embedding(cfg.max_target_positions + 2, dim)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size ** 2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.self_pos_q_linear = Linear(dim, dim)
        self.self_pos_k_linear = Linear(dim, dim)
        self.cross_pos_q_linear = Linear(dim, dim)
        self.cross_pos_k_linear = Linear(dim, dim)
        self.dropout = nn.Dropout(cfg.dropout)
        rates = torch.linspace(0, cfg.decoder_drop_path_rate, cfg.decoder_layers, device="cpu").tolist()
        self.layers = nn.ModuleList(DecoderLayer(cfg, rates[i]) for i in range(cfg.decoder_layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.output_projection = Linear(dim, cfg.vocab_size, bias=False)
        self.output_projection.weight = embed_tokens.weight
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * cfg.token_bucket_size - 1, heads) for _ in range(cfg.decoder_layers))
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(image_rel_table_rows(cfg.image_bucket_size), heads) for _ in range(cfg.decoder_layers))
        # the original's --decoder-prompt: per-layer self-attention key/value prefixes (openofa/petl)
        self.decoder_prompt_encoder = prompt_encoder_for(cfg, "decoder") if cfg.decoder_prompt else None

    # ---- position biases ---------------------------------------------------------------------
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, H, T, d)."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def cross_pos_keys(self, enc: EncoderOutput) -> torch.Tensor:
        return self._heads(self.cross_pos_k_linear(enc.pos_embed))

    def _code_rows(self, code_masks: torch.Tensor | None, rows: int) -> torch.Tensor | None:
        """``code_masks`` as a (rows,) bool tensor, or None when no row decodes image codes."""
        if code_masks is None:
            return None
        mask = code_masks.to(dtype=torch.bool).reshape(-1)
        if mask.numel() != rows:
            raise ValueError(f"code_masks has {mask.numel()} entries for {rows} decoder rows")
        return mask if bool(mask.any()) else None

    def _code_ids(self, positions: torch.Tensor) -> torch.Tensor:
        return code_position_ids(positions, self.cfg.code_image_size, self.cfg.image_bucket_size)

    def _abs_biases(self, q_pos: torch.Tensor, k_pos: torch.Tensor, enc_pos_k: torch.Tensor):
        """Self (1, H, T, K) and cross (1 or B, H, T, S) absolute biases from normalised position
        embeddings of the queries (1, T, C) and of the self-attention keys (1, K, C)."""
        self_q = self._heads(self.self_pos_q_linear(q_pos)) * self.pos_scaling
        self_k = self._heads(self.self_pos_k_linear(k_pos))
        cross_q = self._heads(self.cross_pos_q_linear(q_pos)) * self.pos_scaling
        return self_q @ self_k.transpose(2, 3), cross_q @ enc_pos_k.transpose(2, 3)

    def _position_biases(self, positions: torch.Tensor, enc_pos_k: torch.Tensor, enc_pad_bias: torch.Tensor,
                         code: torch.Tensor | None = None, cross_rows: torch.Tensor | None = None):
        """Biases for query positions ``positions`` (T,) attending to keys at 0..positions[-1].

        Returns the self bias without relative part (1, H, T, K) and the cross bias (B, H, T, S).
        With ``code`` (N,) the self bias is (N, H, T, K) and rows flagged in ``code`` (and in
        ``cross_rows`` (B,) for the cross bias) take the image-code positions."""
        keys = torch.arange(int(positions[-1]) + 1, device=positions.device)
        if code is not None and bool(code.all()):  # code rows only: no text positions (they may
            # run past the text tables: a 32x32 grid is 1025 positions)
            img_pos = self.image_pos_ln(self.embed_image_positions.weight[self._code_ids(keys)])[None]
            self_bias, cross_bias = self._abs_biases(img_pos[:, positions], img_pos, enc_pos_k)
            return self_bias, cross_bias + enc_pad_bias
        all_pos = self.pos_ln(self.embed_positions.weight[keys])[None]  # keys 0..last
        self_bias, cross_bias = self._abs_biases(all_pos[:, positions], all_pos, enc_pos_k)
        if code is not None:
            img_pos = self.image_pos_ln(self.embed_image_positions.weight[self._code_ids(keys)])[None]
            img_self, img_cross = self._abs_biases(img_pos[:, positions], img_pos, enc_pos_k)
            self_bias = torch.where(code[:, None, None, None], img_self, self_bias)
            cross_bias = torch.where(cross_rows[:, None, None, None], img_cross, cross_bias)
        return self_bias, cross_bias + enc_pad_bias

    def _rel_biases(self, q_pos: torch.Tensor, k_pos: torch.Tensor, code: torch.Tensor | None) -> list:
        """Per layer, the relative self-attention bias (1 or N, H, Q, K)."""
        cfg = self.cfg
        if code is not None and bool(code.all()):
            img_bucket = image_rel_bucket_of_ids(self._code_ids(q_pos), self._code_ids(k_pos), cfg.image_bucket_size)
            return [t.weight[img_bucket].permute(2, 0, 1)[None] for t in self.image_rel_pos_table_list]
        bucket = token_rel_bucket(q_pos, k_pos, cfg.token_bucket_size, cfg.max_target_positions)
        text = [t.weight[bucket].permute(2, 0, 1)[None] for t in self.token_rel_pos_table_list]
        if code is None:
            return text
        img_bucket = image_rel_bucket_of_ids(self._code_ids(q_pos), self._code_ids(k_pos), cfg.image_bucket_size)
        rows = code[:, None, None, None]
        return [torch.where(rows, t.weight[img_bucket].permute(2, 0, 1)[None], b)
                for t, b in zip(self.image_rel_pos_table_list, text)]

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        entangle = not self.cfg.disable_entangle  # the original's `x += tgt_pos_embed` unless --disable-entangle
        if code is None:
            if entangle:
                x = x + self.embed_positions.weight[positions]
            return self.dropout(self.layernorm_embedding(x))
        rows = code[:, None, None]
        if entangle and bool(code.all()):
            x = x + self.embed_image_positions.weight[self._code_ids(positions)]
        elif entangle:
            x = x + torch.where(rows, self.embed_image_positions.weight[self._code_ids(positions)],
                                self.embed_positions.weight[positions])
        if bool(code.all()):
            return self.dropout(self.code_layernorm_embedding(x))
        return self.dropout(torch.where(rows, self.code_layernorm_embedding(x), self.layernorm_embedding(x)))

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_projection(self.layer_norm(x))

    def output_logits(self, features: torch.Tensor, vocab: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Logits of ``features`` (the decoder's normalised output, ``features_only=True``) for the
        whole vocabulary, or for the token ids ``vocab`` only (..., len(vocab)); a ``slice`` of
        ids reads those rows of the weight in place."""
        if vocab is None:
            return self.output_projection(features)
        if isinstance(vocab, slice):
            return torch.nn.functional.linear(features, self.output_projection.weight[vocab])
        return torch.nn.functional.linear(features, self.output_projection.weight.index_select(0, vocab))

    # ---- teacher forcing ---------------------------------------------------------------------
    def forward(self, prev_output_tokens: torch.Tensor, enc: EncoderOutput,
                features_only: bool = False, code_masks: torch.Tensor | None = None,
                cross_attention_layer: int | None = None) -> torch.Tensor | tuple[torch.Tensor, CrossAttention]:
        """Logits (B, T, V) for every position of ``prev_output_tokens`` (B, T); ``code_masks`` (B,)
        flags the rows whose target is image codes. With ``cross_attention_layer`` (an index into
        the layers, negative from the end) also that layer's :class:`CrossAttention`."""
        cfg = self.cfg
        bsz, tgt_len = prev_output_tokens.shape
        device = prev_output_tokens.device
        code = self._code_rows(code_masks, bsz)
        positions = torch.arange(tgt_len, device=device)
        x = self._embed(prev_output_tokens, positions, code)
        enc_pad_bias = key_padding_bias(enc.padding_mask, x.dtype)
        self_abs, cross_bias = self._position_biases(positions, self.cross_pos_keys(enc), enc_pad_bias, code, code)
        causal = torch.full((tgt_len, tgt_len), float("-inf"), device=device, dtype=self_abs.dtype).triu_(1)
        pad = prev_output_tokens.eq(cfg.pad)
        self_mask = causal[None, None] + (key_padding_bias(pad, self_abs.dtype) if pad.any() else 0.0)
        rel = self._rel_biases(positions, positions, code)
        want = None
        if cross_attention_layer is not None:
            n = len(self.layers)
            if not -n <= cross_attention_layer < n:
                raise IndexError(f"cross_attention_layer {cross_attention_layer}: the decoder has {n} layers")
            want = cross_attention_layer % n
        attention = None
        prefixes = self.decoder_prompt_encoder(bsz) if self.decoder_prompt_encoder is not None else None
        for i, layer in enumerate(self.layers):
            self_bias = (self_abs + rel[i] + self_mask).to(x.dtype)
            cross_kv = layer.encoder_attn.project_kv(enc.hidden)
            prefix = None if prefixes is None else prefixes[i]
            if i == want:
                x, weights = layer(x, self_bias, cross_kv, cross_bias.to(x.dtype), need_weights=True, prefix=prefix)
                attention = CrossAttention(weights, enc.image_grid)
            else:
                x = layer(x, self_bias, cross_kv, cross_bias.to(x.dtype), prefix=prefix)
        out = self.layer_norm(x) if features_only else self._output(x)
        return out if attention is None else (out, attention)

    # ---- incremental decoding ------------------------------------------------------------------
    def init_cache(self, enc: EncoderOutput, group: int = 1,
                   code_masks: torch.Tensor | None = None) -> DecoderCache:
        """``code_masks`` (B,): the inputs whose decoder rows produce image codes."""
        cross_kv = [layer.encoder_attn.project_kv(enc.hidden) for layer in self.layers]
        code = self._code_rows(code_masks, enc.batch_size)
        cache = DecoderCache(enc, cross_kv, self.cross_pos_keys(enc), group, code)
        if self.decoder_prompt_encoder is not None:  # the prefixes lead every row's self-attention keys
            prefixes = self.decoder_prompt_encoder(cache.num_rows)
            for kv, (pk, pv) in zip(cache.self_kv, prefixes):
                dtype = self.embed_tokens.weight.dtype
                kv.update(pk.to(dtype), pv.to(dtype))
            cache.prefix_len = prefixes[0][0].shape[2]
        return cache

    def step(self, tokens: torch.Tensor, cache: DecoderCache, features_only: bool = False) -> torch.Tensor:
        """Feed the last column of ``tokens`` (N, t+1) at position t; return logits (N, V), or with
        ``features_only`` the normalised decoder output (N, C) for :meth:`output_logits`."""
        t = tokens.shape[1] - 1
        if t != cache.step:
            raise ValueError(f"decoder cache is at step {cache.step} but got a prefix of length {t + 1}")
        device = tokens.device
        pos = torch.tensor([t], device=device)
        inputs_code = cache.code_masks
        code = None if inputs_code is None else inputs_code.repeat_interleave(cache.group)
        x = self._embed(tokens[:, -1:], pos, code)
        if code is None:
            self_biases, cross_bias = self._step_biases(t, cache)
        else:
            if bool(code.all()):
                self_biases, cross_bias = self._code_step_biases(t, cache)
            else:
                self_abs, cross_bias = self._position_biases(pos, cache.cross_pos_k, cache.enc_pad_bias, code,
                                                             inputs_code)
                rel = self._rel_biases(pos, torch.arange(t + 1, device=device), code)
                cross_bias = cross_bias.to(x.dtype)
                self_biases = [(self_abs + r).to(x.dtype) for r in rel]
            if cache.prefix_len:  # prefix-tuning keys lead the cache: no position bias for them
                self_biases = [torch.nn.functional.pad(b, (cache.prefix_len, 0)) for b in self_biases]
        rule, n = self.exit_rule, len(self.layers)
        for i, layer in enumerate(self.layers):
            prev, x = x, layer(x, self_biases[i], cache.cross_kv[i], cross_bias, cache.self_kv[i], cache.group)
            if rule is not None and i + 1 < n and rule.exit_after(x, prev, t, cache.gen_max_len):
                fill_skipped_cache(self.layers[i + 1:], x, cache.self_kv[i + 1:])  # MuE early exit
                break
        if rule is not None:
            rule.record(i + 1)
        cache.step += 1
        return self.layer_norm(x)[:, -1] if features_only else self._output(x)[:, -1]

    BIAS_CHUNK = 16

    def _step_biases(self, t: int, cache: DecoderCache) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Self biases per layer (1, H, 1, t+1) and the cross bias (B, H, 1, S) of step ``t`` for
        text rows. They depend on positions only, so they are computed for BIAS_CHUNK steps at
        once (a few small products per chunk instead of per step) and sliced."""
        start = cache.bias_start
        if cache.cross_biases is None or not start <= t < start + self.BIAS_CHUNK:
            start = t
            positions = torch.arange(t, t + self.BIAS_CHUNK, device=cache.cross_pos_k.device)
            self_abs, cross = self._position_biases(positions, cache.cross_pos_k, cache.enc_pad_bias)
            keys = torch.arange(t + self.BIAS_CHUNK, device=positions.device)
            dtype = self.embed_positions.weight.dtype
            cache.self_biases = [torch.nn.functional.pad((self_abs + r).to(dtype), (cache.prefix_len, 0))
                                 for r in self._rel_biases(positions, keys, None)]
            cache.cross_biases = cross.to(dtype)
            cache.bias_start = start
        row = t - start
        return ([b[:, :, row:row + 1, : cache.prefix_len + t + 1] for b in cache.self_biases],
                cache.cross_biases[:, :, row:row + 1])

    def _code_step_biases(self, t: int, cache: DecoderCache) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Self biases per layer (1, H, 1, t+1) and the cross bias (B, H, 1, S) of step ``t`` when
        every row decodes image codes. The grid's image positions are normalised and projected
        once per cache; a step multiplies its own query row with them and gathers its row of the
        2-D relative tables (nothing is recomputed for earlier positions)."""
        if cache.code_positions is None or cache.code_positions[0].shape[0] <= t:
            w = self.cfg.code_image_size // 8
            n = max(t + 1, w * w + 2)
            ids = self._code_ids(torch.arange(n, device=cache.cross_pos_k.device))
            pos = self.image_pos_ln(self.embed_image_positions.weight[ids])[None]
            cache.code_positions = (ids, self._heads(self.self_pos_q_linear(pos)) * self.pos_scaling,
                                    self._heads(self.self_pos_k_linear(pos)),
                                    self._heads(self.cross_pos_q_linear(pos)) * self.pos_scaling)
        ids, self_q, self_k, cross_q = cache.code_positions
        self_abs = self_q[:, :, t:t + 1] @ self_k[:, :, : t + 1].transpose(2, 3)
        cross = cross_q[:, :, t:t + 1] @ cache.cross_pos_k.transpose(2, 3) + cache.enc_pad_bias
        bucket = image_rel_bucket_of_ids(ids[t:t + 1], ids[: t + 1], self.cfg.image_bucket_size)
        dtype = self.embed_positions.weight.dtype
        return ([(self_abs + table.weight[bucket].permute(2, 0, 1)[None]).to(dtype)
                 for table in self.image_rel_pos_table_list], cross.to(dtype))
