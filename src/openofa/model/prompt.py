"""Prefix tuning, as the original's ``--encoder-prompt`` / ``--decoder-prompt`` (type "prefix").

A ``PromptEncoder`` turns the prompt ids ``0..L-1`` into, for every layer, a key and a value
prefix of L positions: an embedding of width ``layers * 2 * dim`` (or, with the projection, an
embedding of width ``dim`` through ``Linear(dim, prompt_dim) -> ReLU -> Linear(prompt_dim,
layers * 2 * dim)``), viewed as ``(B, L, layers * 2, heads, head_dim)``, dropped out (p 0.2 in
training) and split so that layer l takes entries ``2l`` (keys) and ``2l + 1`` (values).

The prefixes are put in front of the self-attention's projected keys and values (they are not
projected themselves). Prefix columns get no position bias and are never masked; queries, the
sequence itself and the cross-attention are untouched. In the decoder the prefixes are placed in
the KV cache once, before the first step.
"""

from __future__ import annotations

import torch
from torch import nn

DROPOUT = 0.2


class PromptEncoder(nn.Module):
    def __init__(self, length: int, layers: int, dim: int, heads: int, projection: bool = False,
                 prompt_dim: int = 0) -> None:
        super().__init__()
        self.length, self.layers, self.heads = length, layers, heads
        self.head_dim = dim // heads
        out = layers * 2 * dim
        if projection:
            self.embedding = nn.Embedding(length, dim)
            hidden = prompt_dim or 2 * dim
            self.trans = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))
        else:
            self.embedding = nn.Embedding(length, out)
            self.trans = None
        self.dropout = nn.Dropout(DROPOUT)
        with torch.no_grad():  # init_bert_params
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)

    def forward(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the key and value prefixes (batch, heads, L, head_dim)."""
        x = self.embedding.weight  # the ids are 0..L-1: the whole table
        if self.trans is not None:
            x = self.trans(x)
        x = x.view(1, self.length, self.layers * 2, self.heads, self.head_dim).expand(batch, -1, -1, -1, -1)
        x = self.dropout(x).permute(2, 0, 3, 1, 4)  # (layers*2, B, H, L, d)
        return [(x[2 * i], x[2 * i + 1]) for i in range(self.layers)]


def prompt_encoder_for(config, side: str) -> PromptEncoder:
    layers = getattr(config, f"{side}_layers")
    heads = getattr(config, f"{side}_attention_heads")
    return PromptEncoder(getattr(config, f"{side}_prompt_length"), layers, config.embed_dim, heads,
                         getattr(config, f"{side}_prompt_projection"), getattr(config, f"{side}_prompt_dim"))
