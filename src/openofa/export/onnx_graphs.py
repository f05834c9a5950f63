"""The three modules exported to ONNX: image encoder, encoder, and one decoder step.

They hold the loaded :class:`~openofa.model.OFAModel`'s modules and compute what
``Encoder.forward`` and ``Decoder.step`` compute, written with tensors only (no Python branches
on values, no cache objects) so that a traced graph keeps its dynamic axes:

* :class:`ImageEncoderGraph`: ``patch_images (B, 3, H, W)`` -> ``image_embeds (B, h*w, C)``, the
  ResNet trunk, ``image_proj``, type embedding, position embedding (when entangled) and
  ``patch_layernorm_embedding`` of ``Encoder.embed_image``. H and W are fixed at export (the patch
  grid's position ids and relative buckets become constants).
* :class:`EncoderGraph`: text tokens, image embeddings and ``patch_masks`` -> the encoder's output,
  its padding mask, the keys of the cross-attention position bias and every decoder layer's
  cross-attention keys/values (computed once per input instead of at every step).
* :class:`DecoderStepGraph`: the last token at position ``step``, every layer's past
  self-attention keys/values (length ``step``) and the encoder's tensors -> logits and the keys/
  values extended by this step. Text targets only; N decoder rows share the cross-attention
  tensors of B = N / group inputs (beams are folded into the query axis, as ``DecoderLayer`` does).
"""

from __future__ import annotations

import torch
from torch import nn

from openofa.model.layers import DecoderLayer
from openofa.model.ofa import OFAModel
from openofa.model.positions import _token_bucket_by_offset, image_rel_bucket, image_rel_table_rows, token_rel_bucket


def _attend(att, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``Attention.attend`` spelled out (softmax of scaled scores plus bias), which every ONNX
    opset has; the same values up to summation order."""
    scores = (q * att.scaling) @ k.transpose(-1, -2) + bias
    return att._scale_heads(scores.softmax(-1) @ v)


class ImageEncoderGraph(nn.Module):
    def __init__(self, model: OFAModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, patch_images: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed_image(patch_images)[0]


class EncoderGraph(nn.Module):
    """``Encoder.forward`` for inputs that all have an image of the exported grid (``patch_masks``
    switches rows' images off, as in PyTorch)."""

    def __init__(self, model: OFAModel, grid: tuple[int, int]) -> None:
        super().__init__()
        enc, cfg = model.encoder, model.config
        self.encoder, self.decoder, self.cfg = enc, model.decoder, cfg
        h, w = grid
        self.n_img = h * w
        with torch.no_grad():
            self.register_buffer("img_pos", enc.image_pos_ln(enc.image_position_embeddings(h, w, "cpu")))
        self.register_buffer("img_rel", image_rel_bucket(h, w, cfg.image_bucket_size))

    def forward(self, src_tokens: torch.Tensor, image_embeds: torch.Tensor, patch_masks: torch.Tensor):
        enc, cfg = self.encoder, self.cfg
        bsz, seq_len = src_tokens.shape[0], src_tokens.shape[1]
        x = enc.embed_tokens(src_tokens) + enc.type_embedding.weight[0]
        if cfg.entangle_position_embedding:
            x = x + enc.embed_positions.weight[:seq_len]
        x = enc.layernorm_embedding(x)
        text_pad = src_tokens.eq(cfg.pad)
        img_pad = (~patch_masks.bool())[:, None].expand(-1, self.n_img)
        padding = torch.cat([img_pad, text_pad], dim=1)
        x = torch.cat([image_embeds, x], dim=1)
        x = x.masked_fill(padding[..., None], 0.0)
        pos = torch.cat([self.img_pos, enc.pos_ln(enc.embed_positions.weight[:seq_len])], dim=0)[None]

        s = pos.shape[1]
        heads = enc.num_heads
        pos_q = enc.pos_q_linear(pos).view(1, s, heads, -1).transpose(1, 2) * enc.pos_scaling
        pos_k = enc.pos_k_linear(pos).view(1, s, heads, -1).transpose(1, 2)
        abs_bias = pos_q @ pos_k.transpose(2, 3)
        pad_bias = torch.zeros_like(padding, dtype=x.dtype).masked_fill(padding, float("-inf"))[:, None, None, :]

        # relative rows into [image table; token table; a zero row], image-text pairs the zero row
        text_idx = torch.arange(seq_len, device=src_tokens.device)
        img_rows = image_rel_table_rows(cfg.image_bucket_size)
        zero_row = img_rows + 2 * cfg.token_bucket_size - 1
        tok = token_rel_bucket(text_idx, text_idx, cfg.token_bucket_size, cfg.max_source_positions) + img_rows
        corner = torch.full_like(tok[:1, :1], zero_row)
        top = torch.cat([self.img_rel, corner.expand(self.n_img, seq_len)], dim=1)
        bottom = torch.cat([corner.expand(seq_len, self.n_img), tok], dim=1)
        rel_index = torch.cat([top, bottom], dim=0).reshape(-1)
        for i, layer in enumerate(enc.layers):
            img_table, tok_table = enc.image_rel_pos_table_list[i].weight, enc.token_rel_pos_table_list[i].weight
            table = torch.cat([img_table, tok_table, tok_table.new_zeros(1, heads)]).t()
            bias = table.index_select(1, rel_index).view(1, heads, s, s) + abs_bias + pad_bias
            x = layer(x, bias)
        hidden = enc.layer_norm(x)

        dec = self.decoder
        cross_pos_k = dec._heads(dec.cross_pos_k_linear(pos.expand(bsz, -1, -1)))
        cross_kv = []
        for layer in dec.layers:
            cross_kv.extend(layer.encoder_attn.project_kv(hidden))
        return (hidden, padding, cross_pos_k, *cross_kv)


class DecoderStepGraph(nn.Module):
    """``Decoder.step`` for text rows. The position tables that depend on the step only (the
    normalised position embedding's projections, each layer's relative bias by distance) are
    computed once here and stored in the graph."""

    def __init__(self, model: OFAModel) -> None:
        super().__init__()
        dec, cfg = model.decoder, model.config
        self.decoder, self.cfg = dec, cfg
        self.num_layers = len(dec.layers)
        with torch.no_grad():
            p = dec.pos_ln(dec.embed_positions.weight)[None]  # (1, P, C), every position
            self.register_buffer("self_q", (dec._heads(dec.self_pos_q_linear(p)) * dec.pos_scaling)[0])  # (H, P, d)
            self.register_buffer("self_k", dec._heads(dec.self_pos_k_linear(p))[0])
            self.register_buffer("cross_q", (dec._heads(dec.cross_pos_q_linear(p)) * dec.pos_scaling)[0])
            # per layer, the relative bias of distance 0 .. max_target_positions - 1: (L, H, P)
            bucket = _token_bucket_by_offset(cfg.token_bucket_size, cfg.max_target_positions)
            rows = bucket[cfg.max_target_positions - 1:]
            self.register_buffer("rel", torch.stack([t.weight[rows].t() for t in dec.token_rel_pos_table_list]))

    def forward(self, token: torch.Tensor, step: torch.Tensor, padding_mask: torch.Tensor,
                cross_pos_k: torch.Tensor, *kv: torch.Tensor):
        """``token`` (N, 1), ``step`` (1,) int64, ``padding_mask`` (B, S) bool, ``cross_pos_k`` (B, H,
        S, d); then per layer the past self keys and values (N, H, step, d), then per layer the
        cross keys and values (B, H, S, d). Returns logits (N, V) and per layer the present self
        keys and values (N, H, step + 1, d)."""
        dec, cfg = self.decoder, self.cfg
        n_layers = self.num_layers
        past, cross = kv[: 2 * n_layers], kv[2 * n_layers:]
        x = dec.embed_tokens(token)
        if not cfg.disable_entangle:
            x = x + dec.embed_positions.weight[step][None]
        x = dec.layernorm_embedding(x)

        keys = torch.arange(past[0].shape[2] + 1, device=token.device)  # positions 0 .. step
        q_self = self.self_q.index_select(1, step)  # (H, 1, d)
        self_abs = (q_self @ self.self_k.index_select(1, keys).transpose(1, 2))[None]  # (1, H, 1, K)
        distance = step - keys
        pad_bias = torch.zeros_like(padding_mask, dtype=x.dtype).masked_fill(padding_mask, float("-inf"))
        cross_bias = self.cross_q.index_select(1, step)[None] @ cross_pos_k.transpose(2, 3)  # (B, H, 1, S)
        cross_bias = cross_bias + pad_bias[:, None, None, :]

        present = []
        for i, layer in enumerate(dec.layers):
            self_bias = self_abs + self.rel[i].index_select(1, distance)[None, :, None, :]
            x, k, v = self._layer(layer, x, self_bias, past[2 * i], past[2 * i + 1],
                                  cross[2 * i], cross[2 * i + 1], cross_bias)
            present.extend((k, v))
        logits = dec._output(x)[:, -1]
        return (logits, *present)

    @staticmethod
    def _layer(layer: DecoderLayer, x, self_bias, past_k, past_v, cross_k, cross_v, cross_bias):
        """``DecoderLayer.forward`` for one step with explicit keys/values."""
        h = layer.self_attn_layer_norm(x)
        att = layer.self_attn
        q = att.project_q(h)
        k, v = att.project_kv(h)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        h = att.merge(_attend(att, q, k, v, self_bias))
        if layer.self_attn_ln is not None:
            h = layer.self_attn_ln(h)
        x = layer._attn_residual(x, h)  # its dropout and drop path are no-ops in eval; an adapter there is not
        # cross-attention: the group of rows decoding one input share its keys (query axis fold)
        h = layer.encoder_attn_layer_norm(x)
        att = layer.encoder_attn
        q = att.project_q(h)  # (N, H, 1, d)
        n, heads, d = q.shape[0], q.shape[1], q.shape[3]
        b = cross_k.shape[0]
        q = q.reshape(b, -1, heads, d).transpose(1, 2)  # (B, H, group, d)
        o = _attend(att, q, cross_k, cross_v, cross_bias)
        o = o.transpose(1, 2).reshape(n, heads, 1, d)
        h = att.merge(o)
        if layer.cross_attn_ln is not None:
            h = layer.cross_attn_ln(h)
        x = x + h
        return layer._ffn(x), k, v

