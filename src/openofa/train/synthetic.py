"""A synthetic task that needs no files: for smoke runs of a recipe, tests and benchmarks.

Example ``i`` is a pure function of (seed, i): a random source of ``src_len`` tokens and,
unless ``image_size`` is 0, a random image; the target copies the first ``tgt_len - 1`` source
tokens and ends with eos, so the loss can go down. Batches follow the collater contract of
``openofa.data`` (right-padded with pad, ``prev_output_tokens`` = bos + target[:-1]).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from openofa.errors import OFAError


class SyntheticDataset(torch.utils.data.Dataset):
    def __init__(self, num_examples: int = 64, *, src_len: int = 12, tgt_len: int = 6, image_size: int = 64,
                 vocab_size: int = 1000, seed: int = 0, pad: int = 1, bos: int = 0, eos: int = 2,
                 vary_length: bool = True, augment: bool = False) -> None:
        if num_examples <= 0 or src_len < 2 or tgt_len < 2 or tgt_len > src_len + 1:
            raise OFAError("synthetic data: need num_examples > 0, src_len >= 2, 2 <= tgt_len <= src_len + 1")
        if vocab_size <= 8:
            raise OFAError(f"synthetic data: vocab_size {vocab_size} is too small")
        self.n, self.src_len, self.tgt_len, self.image_size = num_examples, src_len, tgt_len, image_size
        self.vocab = vocab_size
        self.seed = seed
        self.pad, self.bos, self.eos = pad, bos, eos
        self.vary_length = vary_length
        self.augment = augment

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        length = int(rng.integers(max(2, self.src_len // 2), self.src_len + 1)) if self.vary_length else self.src_len
        src = rng.integers(4, min(self.vocab, 4 + 2000), size=length)
        tgt = np.concatenate([src[: self.tgt_len - 1], [self.eos]])
        image = None
        if self.image_size:
            image = torch.from_numpy(rng.standard_normal((3, self.image_size, self.image_size)).astype(np.float32))
            if self.augment:  # like real augmentation: draws from the global generators
                image = image + 0.1 * torch.randn(image.shape)
                if random.random() < 0.5:
                    image = image.flip(-1)
        return {"id": i, "source": torch.from_numpy(np.concatenate([[self.bos], src, [self.eos]])),
                "target": torch.from_numpy(tgt), "image": image}

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        bsz = len(samples)
        s_len = max(len(s["source"]) for s in samples)
        t_len = max(len(s["target"]) for s in samples)
        src = torch.full((bsz, s_len), self.pad, dtype=torch.long)
        tgt = torch.full((bsz, t_len), self.pad, dtype=torch.long)
        prev = torch.full((bsz, t_len), self.pad, dtype=torch.long)
        for b, s in enumerate(samples):
            src[b, : len(s["source"])] = s["source"]
            tgt[b, : len(s["target"])] = s["target"]
            prev[b, 0] = self.bos
            prev[b, 1: len(s["target"])] = s["target"][:-1]
        images = masks = None
        if any(s["image"] is not None for s in samples):
            images = torch.stack([s["image"] for s in samples])
            masks = torch.ones(bsz, dtype=torch.bool)
        return {
            "id": [s["id"] for s in samples],
            "net_input": {"src_tokens": src, "src_lengths": src.ne(self.pad).sum(1), "patch_images": images,
                          "patch_masks": masks, "prev_output_tokens": prev},
            "target": tgt,
            "ntokens": int(tgt.ne(self.pad).sum()),
            "nsentences": bsz,
        }


def synthetic_datasets(options: dict, vocab_size: int, seed: int) -> tuple[SyntheticDataset, SyntheticDataset]:
    """(train, valid) from a recipe's ``data`` mapping: num_examples, valid_examples, src_len,
    tgt_len, image_size, vary_length, augment (random noise and flips on the training images)."""
    opts = dict(options)
    known = {"num_examples", "valid_examples", "src_len", "tgt_len", "image_size", "seed", "vary_length", "augment"}
    bad = sorted(set(opts) - known)
    if bad:
        raise OFAError(f"synthetic data: unknown option(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    valid_n = int(opts.pop("valid_examples", 16))
    data_seed = int(opts.pop("seed", seed))
    train = SyntheticDataset(vocab_size=vocab_size, seed=data_seed, **opts)
    opts["num_examples"] = valid_n
    opts["augment"] = False
    valid = SyntheticDataset(vocab_size=vocab_size, seed=data_seed + 1_000_000, **opts)
    return train, valid
