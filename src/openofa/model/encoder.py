"""The OFA encoder: image patches and text tokens in one sequence, positions as attention bias.

Sequence = [image patches ; text tokens]. Text embeddings get type 0 and ``layernorm_embedding``,
patches get ``image_proj``, type 1 and ``patch_layernorm_embedding``; padded positions (text pads
and the patches of images switched off by ``patch_masks``) are zeroed and masked as keys.
No absolute position embedding is added to the inputs: positions enter every layer as an
attention bias ``pos_q(P) @ pos_k(P)^T`` plus a per-layer relative bias (text-text and
image-image blocks only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openofa.config import OFAConfig
from openofa.model.layers import EncoderLayer
from openofa.model.linear import Linear
from openofa.model.prompt import prompt_encoder_for
from openofa.model.positions import image_position_ids, image_rel_bucket, image_rel_table_rows, token_rel_bucket
from openofa.model.resnet import ResNetTrunk


@dataclass
class EncoderOutput:
    """Batch-first encoder results consumed by the decoder."""

    hidden: torch.Tensor  # (B, S, C) after the final LayerNorm
    padding_mask: torch.Tensor  # (B, S) bool, True = padding
    pos_embed: torch.Tensor  # (B, S, C) normalised position embeddings (for the cross-attention bias)
    # (rows, columns) of the image patches, which are positions [0, rows * columns) in row-major
    # order; None without images
    image_grid: tuple[int, int] | None = None

    def index_select(self, index: torch.Tensor) -> "EncoderOutput":
        return EncoderOutput(self.hidden.index_select(0, index), self.padding_mask.index_select(0, index),
                             self.pos_embed.index_select(0, index), self.image_grid)

    def repeat_interleave(self, n: int) -> "EncoderOutput":
        idx = torch.arange(self.hidden.shape[0], device=self.hidden.device).repeat_interleave(n)
        return self.index_select(idx)

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]


def key_padding_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) bool -> (B, 1, 1, S) additive bias with -inf at padded keys."""
    bias = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    return bias.masked_fill_(padding_mask, float("-inf"))[:, None, None, :]


class Encoder(nn.Module):
    exit_rule = None  # an early_exit.ExitRule when MuE early exit is on (inference)

    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        self.cfg = cfg
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads = heads
        self.pos_scaling = (dim / heads * cfg.attn_scale_factor) ** -0.5
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(dim)
        self.type_embedding = nn.Embedding(2, dim)
        self.embed_images = ResNetTrunk(cfg.resnet_layers, cfg.resnet_drop_path_rate, cfg.resnet_width)
        self.image_proj = Linear(self.embed_images.out_channels, dim)
        self.patch_layernorm_embedding = nn.LayerNorm(dim)
        self.embed_positions = nn.Embedding(cfg.max_source_positions + 2, dim)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size ** 2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.pos_q_linear = Linear(dim, dim)
        self.pos_k_linear = Linear(dim, dim)
        self.dropout = nn.Dropout(cfg.dropout)
        rates = torch.linspace(0, cfg.encoder_drop_path_rate, cfg.encoder_layers, device="cpu").tolist()
        self.layers = nn.ModuleList(EncoderLayer(cfg, rates[i]) for i in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * cfg.token_bucket_size - 1, heads) for _ in range(cfg.encoder_layers))
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(image_rel_table_rows(cfg.image_bucket_size), heads) for _ in range(cfg.encoder_layers))
        # the original's --encoder-prompt: per-layer key/value prefixes (prefix tuning, openofa/petl)
        self.encoder_prompt_encoder = prompt_encoder_for(cfg, "encoder") if cfg.encoder_prompt else None

    def image_position_embeddings(self, h: int, w: int, device) -> torch.Tensor:
        """(h*w, C) absolute position embeddings of an h x w patch grid. With the original's
        ``interpolate_position`` and a grid larger than the ``orig_patch_image_size`` one the
        table was learnt at, the learnt grid's embeddings are bilinearly interpolated to h x w
        (the relative position biases keep their buckets)."""
        cfg = self.cfg
        side = cfg.orig_patch_image_size // 16
        if cfg.interpolate_position and h * w > side * side:
            old = self.embed_image_positions(image_position_ids(side, side, cfg.image_bucket_size, device))
            old = old.reshape(1, side, side, -1).permute(0, 3, 1, 2)
            new = F.interpolate(old, size=(h, w), mode="bilinear")
            return new.permute(0, 2, 3, 1).reshape(h * w, -1)
        return self.embed_image_positions(image_position_ids(h, w, cfg.image_bucket_size, device))

    def embed_image(self, patch_images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """ResNet features -> projected, typed, normalised patch embeddings (B, h*w, C)."""
        feat = self.embed_images(patch_images)
        h, w = feat.shape[-2:]
        x = self.image_proj(feat.flatten(2).transpose(1, 2))
        x = x + self.type_embedding.weight[1]
        if self.cfg.entangle_position_embedding:
            x = x + self.image_position_embeddings(h, w, x.device)
        x = self.patch_layernorm_embedding(x)
        return x, h, w

    def forward(self, src_tokens: torch.Tensor, patch_images: torch.Tensor | None = None,
                patch_masks: torch.Tensor | None = None) -> EncoderOutput:
        cfg = self.cfg
        bsz, seq_len = src_tokens.shape
        device = src_tokens.device
        x = self.embed_tokens(src_tokens) + self.type_embedding.weight[0]
        if cfg.entangle_position_embedding:  # the original's --entangle-position-embedding
            x = x + self.embed_positions.weight[:seq_len]
        x = self.layernorm_embedding(x)
        padding = src_tokens.eq(cfg.pad)
        pos = self.pos_ln(self.embed_positions.weight[:seq_len])[None]  # (1, L, C), same for every row
        n_img = 0
        grid = None
        if patch_images is not None:
            img, h, w = self.embed_image(patch_images)
            n_img, grid = h * w, (h, w)
            img_pad = torch.zeros(bsz, n_img, dtype=torch.bool, device=device)
            if patch_masks is not None:
                img_pad |= ~patch_masks.to(device=device, dtype=torch.bool)[:, None]
            x = torch.cat([img, x], dim=1)
            padding = torch.cat([img_pad, padding], dim=1)
            img_pos = self.image_pos_ln(self.image_position_embeddings(h, w, device))[None]
            pos = torch.cat([img_pos, pos], dim=1)
        x = self.dropout(x.masked_fill(padding[..., None], 0.0))

        # position bias shared by all layers: (1, H, S, S)
        s = pos.shape[1]
        pos_q = self.pos_q_linear(pos).view(1, s, self.num_heads, -1).transpose(1, 2) * self.pos_scaling
        pos_k = self.pos_k_linear(pos).view(1, s, self.num_heads, -1).transpose(1, 2)
        abs_bias = pos_q @ pos_k.transpose(2, 3)
        pad_bias = key_padding_bias(padding, abs_bias.dtype) if padding.any() else None

        # relative biases: text-text pairs from the token table, patch-patch pairs from the image
        # table, image-text pairs none. One (S, S) index into [image rows; token rows; a zero row]
        # lets each layer gather its whole (H, S, S) bias at once, contiguous (a gather into
        # permuted slices of the absolute bias reads strided memory, ~2.5x slower).
        text_idx = torch.arange(seq_len, device=device)
        tok_bucket = token_rel_bucket(text_idx, text_idx, cfg.token_bucket_size, cfg.max_source_positions)
        img_rows = image_rel_table_rows(cfg.image_bucket_size)
        tok_rows = 2 * cfg.token_bucket_size - 1
        rel_index = torch.full((s, s), img_rows + tok_rows, dtype=torch.long, device=device)
        rel_index[n_img:, n_img:] = tok_bucket + img_rows
        if n_img:
            rel_index[:n_img, :n_img] = image_rel_bucket(h, w, cfg.image_bucket_size, device)
        rel_index = rel_index.view(-1)
        prefixes = self.encoder_prompt_encoder(bsz) if self.encoder_prompt_encoder is not None else None
        for i, layer in enumerate(self.layers):
            img_table, tok_table = self.image_rel_pos_table_list[i].weight, self.token_rel_pos_table_list[i].weight
            # gathered in float32 whatever the encoder's dtype: bf16 gathers are ~5x slower on CPU
            table = torch.cat([img_table, tok_table, tok_table.new_zeros(1, self.num_heads)]).t().float().contiguous()
            bias = table.index_select(1, rel_index).view(1, self.num_heads, s, s).add_(abs_bias)
            if pad_bias is not None:
                bias = bias + pad_bias
            prev, x = x, layer(x, bias.to(x.dtype), None if prefixes is None else prefixes[i])
            if self.exit_rule is not None and i + 1 < len(self.layers) and self.exit_rule.exit_after(x, prev):
                break  # MuE early exit (model/early_exit.py): the rest of the stack is skipped
        if self.exit_rule is not None:
            self.exit_rule.record(i + 1)
        x = self.layer_norm(x)
        return EncoderOutput(x, padding, pos.expand(bsz, -1, -1), grid)
