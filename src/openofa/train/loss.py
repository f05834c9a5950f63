"""Label-smoothed cross-entropy, computed the way the original's
``adjust_label_smoothed_cross_entropy`` criterion does.

Per target token (pads excluded), with ``eps`` the smoothing and ``lp`` the log-probabilities::

    loss = (1 - eps - eps_i) * (-lp[target]) + eps_i * sum_{v in allowed} (-lp[v])
    eps_i = eps / (|allowed| - 1)

``allowed`` is the whole vocabulary, or the tokens a constraint mask lets through (logits of the
other tokens are set to -inf before the softmax), or the four special tokens plus a
``constraint_range``. Losses are *summed* over tokens; the gradient is later divided by the
number of tokens of the whole update (all micro-batches, all processes), as fairseq does.

Extras of the original, all optional:

* ``ignore_prefix_size``: drop the first N target positions (prompt-prefixed targets);
* ``ignore_eos``: leave the eos token out of the loss;
* ``conf`` (VQA): per-example weights multiplying the log-probabilities;
* ``drop_worst_ratio`` / ``drop_worst_after``: after ``drop_worst_after`` updates, keep only the
  ``1 - ratio`` lowest-loss tokens of the micro-batch (caption stage 1 uses 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from openofa.errors import OFAError


@dataclass
class LossOutput:
    """Sums over the kept tokens of one micro-batch. ``loss`` carries the graph."""

    loss: torch.Tensor
    nll_loss: torch.Tensor  # detached
    sample_size: int  # tokens in the loss (the gradient's denominator)
    ntokens: int  # target tokens of the batch (as the collater counted them)
    nsentences: int
    # other per-sentence sums a criterion reports (SCST: "reward"); logged as means per sentence
    sums: dict = field(default_factory=dict)


def label_smoothed_nll_loss(
    lprobs: torch.Tensor,
    target: torch.Tensor,
    epsilon: float,
    *,
    constraint_masks: torch.Tensor | None = None,
    constraint_range: tuple[int, int] | None = None,
    drop_worst_ratio: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``lprobs`` (N, V) and ``target`` (N,) of the kept tokens -> (summed loss, summed nll, tokens)."""
    nll = -lprobs.gather(-1, target[:, None]).squeeze(-1)
    if constraint_masks is not None:
        smooth = -lprobs.masked_fill(~constraint_masks, 0.0).sum(-1)
        eps_i = epsilon / (constraint_masks.sum(-1) - 1 + 1e-6)
    elif constraint_range is not None:
        start, end = constraint_range
        cols = torch.cat([torch.arange(4, device=lprobs.device), torch.arange(start, end, device=lprobs.device)])
        smooth = -lprobs.index_select(-1, cols).sum(-1)
        eps_i = epsilon / (cols.numel() - 1 + 1e-6)
    else:
        smooth = -lprobs.sum(-1)
        eps_i = epsilon / (lprobs.shape[-1] - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    if drop_worst_ratio > 0:
        loss, keep = torch.topk(loss, k=int(loss.shape[0] * (1 - drop_worst_ratio)), largest=False)
        nll = nll[keep]
    return loss.sum(), nll.sum(), loss.numel()


def parse_constraint_range(value: Any) -> tuple[int, int] | None:
    """``"start,end"`` (the original's option), a pair, or None."""
    if value is None or value == "":
        return None
    try:
        start, end = (int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise OFAError(f"constraint_range must be 'start,end' (two token ids), got {value!r}") from None
    if not 4 <= start < end:
        raise OFAError(f"constraint_range {start},{end}: expected 4 <= start < end")
    return start, end


class LabelSmoothedCrossEntropy:
    """The training criterion: ``criterion(logits, batch, update_num) -> LossOutput``.

    ``batch`` follows the collater's contract (``target`` (B, T) padded with ``pad``; optional
    ``conf`` (B,) and ``constraint_masks`` (B, T, V) bool)."""

    def __init__(self, label_smoothing: float = 0.1, *, pad: int = 1, eos: int = 2, ignore_prefix_size: int = 0,
                 ignore_eos: bool = False, drop_worst_ratio: float = 0.0, drop_worst_after: int = 0,
                 constraint_range: Any = None) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise OFAError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= drop_worst_ratio < 1.0:
            raise OFAError(f"drop_worst_ratio must be in [0, 1), got {drop_worst_ratio}")
        if ignore_prefix_size < 0:
            raise OFAError(f"ignore_prefix_size must be >= 0, got {ignore_prefix_size}")
        self.eps = float(label_smoothing)
        self.pad, self.eos = pad, eos
        self.ignore_prefix_size = int(ignore_prefix_size)
        self.ignore_eos = bool(ignore_eos)
        self.drop_worst_ratio = float(drop_worst_ratio)
        self.drop_worst_after = int(drop_worst_after)
        self.constraint_range = parse_constraint_range(constraint_range)

    def __call__(self, logits: torch.Tensor, batch: Mapping[str, Any], update_num: int = 0) -> LossOutput:
        target = batch["target"]
        masks = batch.get("constraint_masks")
        if self.ignore_prefix_size:
            p = self.ignore_prefix_size
            logits, target = logits[:, p:], target[:, p:]
            masks = masks[:, p:] if masks is not None else None
        if masks is not None and masks.shape != logits.shape:
            raise OFAError(f"constraint_masks of shape {tuple(masks.shape)} do not match the logits "
                           f"{tuple(logits.shape)} (is the answer list's vocabulary the model's?)")
        keep = target.ne(self.pad)
        if self.ignore_eos:
            keep &= target.ne(self.eos)
        # only the kept positions go through the softmax: same numbers, far less memory
        x = logits[keep]
        tgt = target[keep]
        if masks is not None:
            masks = masks[keep]
            x = x.masked_fill(~masks, float("-inf"))
        if self.constraint_range is not None:
            start, end = self.constraint_range
            x = x.clone()
            x[:, 4:start] = float("-inf")
            x[:, end:] = float("-inf")
        lprobs = F.log_softmax(x.float(), dim=-1)
        conf = batch.get("conf")
        if conf is not None:
            conf = torch.as_tensor(conf, device=lprobs.device, dtype=lprobs.dtype)
            row_conf = conf[:, None].expand(keep.shape)[keep]
            lprobs = lprobs * row_conf[:, None]
        drop = self.drop_worst_ratio if update_num > self.drop_worst_after else 0.0
        loss, nll, kept = label_smoothed_nll_loss(lprobs, tgt, self.eps, constraint_masks=masks,
                                                  constraint_range=self.constraint_range, drop_worst_ratio=drop)
        ntokens = batch.get("ntokens")
        nsentences = batch.get("nsentences")
        return LossOutput(
            loss=loss,
            nll_loss=nll.detach(),
            sample_size=kept,
            ntokens=int(ntokens) if ntokens is not None else int(keep.sum()),
            nsentences=int(nsentences) if nsentences is not None else int(target.shape[0]),
        )
