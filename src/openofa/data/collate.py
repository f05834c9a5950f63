"""Samples -> one batch, the contract the trainer and the evaluation code rely on::

    {
      "id": list,                                  # record ids
      "nsentences": int,                           # samples in the batch
      "ntokens": int,                              # non-pad target tokens
      "net_input": {
        "src_tokens": LongTensor (B, S),           # right-padded with pad (1)
        "src_lengths": LongTensor (B,),
        "patch_images": float (B, 3, H, W) | None, # None for text-only tasks
        "patch_masks": bool (B,) | None,
        "prev_output_tokens": LongTensor (B, T),   # right-padded with pad
        "code_masks": bool (B,),                   # only with image-infilling samples: code targets
      },
      "target": LongTensor (B, T),                 # right-padded with pad
      # extras, when the samples have them:
      "ref": list,                                 # evaluation references, one per sample
      "prefix_tokens": list[LongTensor],           # forced decoder prefix after bos (may be empty)
      "conf": float (B,),                          # VQA
      "constraint_masks": bool (B, T, V),          # with a candidate answer list; False at padding
      "w_resize_ratio", "h_resize_ratio": float (B,), "region_coords": float (B, 4),  # grounding
      "attend_boxes": float (B, 4),                # grounding boxes in patch-image pixels, NaN rows
                                                   # for samples without one (task mixtures)
      "where": list[str],                          # "file:line" of each sample
      "skipped": int,                              # bad rows dropped from this batch (on_error="skip")
    }

A sample may also be a list of samples (a ``pretrain_vl`` row gives one or two); they are
batched as separate samples. Bad rows (``on_error="skip"``) reach the collater as
:class:`Skipped` markers; they are dropped and counted in ``"skipped"``. A batch made only of
bad rows is ``{}``, as the original's collaters return for an empty list.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from openofa.errors import OFAError

__all__ = ["collate", "Skipped", "pad_sequences"]


class Skipped:
    """Stand-in for a bad row that the dataset skipped (``on_error="skip"``)."""

    __slots__ = ("where", "message", "kind")

    def __init__(self, where: str, message: str, kind: str = "other"):
        self.where, self.message, self.kind = where, message, kind

    def __repr__(self) -> str:
        return f"Skipped({self.message!r})"

    def __reduce__(self):
        return (Skipped, (self.where, self.message, self.kind))


def pad_sequences(seqs: Sequence[torch.Tensor], pad: int) -> torch.Tensor:
    """Right-pad 1-D LongTensors into ``(B, max_len)`` (fairseq's ``collate_tokens``)."""
    width = max((int(s.numel()) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s.numel():
            out[i, : s.numel()] = s
    return out


def flatten_samples(samples: Sequence[Any]) -> list[Any]:
    """Samples in order, with the list a row may give (pretrain_vl: the pair and its matching /
    region sample) spread out."""
    return [x for s in samples for x in (s if isinstance(s, (list, tuple)) else [s])]


def collate(samples: Sequence[Any], pad: int = 1) -> dict[str, Any]:
    """Batch samples from a :class:`~openofa.data.dataset.OFADataset` (see the module doc)."""
    good = [s for s in samples if s is not None and not isinstance(s, Skipped)]
    skipped = len(samples) - len(good)
    good = flatten_samples(good)
    if not good:
        return {}
    src = pad_sequences([s["source"] for s in good], pad)
    src_lengths = torch.tensor([int(s["source"].ne(pad).sum()) for s in good], dtype=torch.long)
    target = pad_sequences([s["target"] for s in good], pad)
    prev = pad_sequences([s["prev_output_tokens"] for s in good], pad)
    images = [s.get("patch_image") for s in good]
    if all(im is None for im in images):
        patch_images = patch_masks = None
    else:
        from openofa.vision.transforms import collate_images

        patch_images, patch_masks = collate_images(images)
        patch_masks = patch_masks & torch.tensor([bool(s.get("patch_mask", True)) for s in good])
    batch: dict[str, Any] = {
        "id": [s["id"] for s in good],
        "nsentences": len(good),
        "ntokens": int(target.ne(pad).sum()),
        "net_input": {
            "src_tokens": src,
            "src_lengths": src_lengths,
            "patch_images": patch_images,
            "patch_masks": patch_masks,
            "prev_output_tokens": prev,
        },
        "target": target,
    }
    if any("code_mask" in s for s in good):  # image infilling: targets that are image codes
        batch["net_input"]["code_masks"] = torch.tensor([bool(s.get("code_mask", False)) for s in good])
    first = good[0]
    if "ref" in first:
        batch["ref"] = [s.get("ref") for s in good]
    if "prefix" in first:
        batch["prefix_tokens"] = [s["prefix"] for s in good]
    if "conf" in first:
        batch["conf"] = torch.tensor([float(s["conf"]) for s in good], dtype=torch.float32)
    if "w_resize_ratio" in first:
        batch["w_resize_ratio"] = torch.tensor([float(s["w_resize_ratio"]) for s in good], dtype=torch.float32)
        batch["h_resize_ratio"] = torch.tensor([float(s["h_resize_ratio"]) for s in good], dtype=torch.float32)
        batch["region_coords"] = torch.stack([s["region_coord"] for s in good])
    if any("attend_box" in s for s in good):  # kept in task mixtures: NaN rows have no box
        nan = torch.full((4,), float("nan"))
        batch["attend_boxes"] = torch.stack([s.get("attend_box", nan) for s in good])
    if "constraint_mask" in first:
        if not all("constraint_mask" in s for s in good):
            raise OFAError("collate: samples with and without a constraint_mask in one batch")
        masks = torch.zeros(len(good), target.shape[1], first["constraint_mask"].shape[1], dtype=torch.bool)
        for i, s in enumerate(good):
            m = s["constraint_mask"]
            masks[i, : m.shape[0]] = m
        batch["constraint_masks"] = masks
    if "where" in first:
        batch["where"] = [s.get("where") for s in good]
    if skipped:
        batch["skipped"] = skipped
    for key in ("conf", "w_resize_ratio"):
        if (key in first) != all(key in s for s in good):
            raise OFAError(f"collate: samples of different tasks in one batch ({key!r} only in some)")
    return batch
