"""Teach grounding to look at the named object: a loss on the decoder's cross-attention.

Not in the original. The project's own small model, trained with the cross-entropy alone, gives
the same box for "the red circle" and "the blue square" in one image: the first location token
does not depend on the colour and shape words (``docs/own_model.md`` has the probe). Supervising
where the decoder looks fixes much of it. For every sample with a box (``attend_boxes`` from the
collater: grounding rows, and VQA rows whose record names the object the question is about), at
the decoder step that emits the first target token (the box's first location token, the
answer's first token), this criterion adds::

    weight * -log( sum over the box's patches of the attention, averaged over heads )

for one decoder layer's cross-attention (the last by default). The box's patches are the cells
of the image grid whose centre lies inside the box, plus the cell holding the box's centre (so a
box smaller than a cell still has one). The step is the first position with a real target token:
0 for the original's grounding, the prompt's length with ``prompt_type: prev_output``.

``weight`` counts like target tokens: the cross-entropy is summed over tokens and the update is
divided by its number of tokens, so each boxed sample adds ``weight`` tokens' worth of this loss.
A grounding target has 5 tokens (4 locations and eos); weight 5 gives the attention loss the
same weight as the sample's mean token loss.

With ``steps`` > 1 the same is done at the steps of the next location tokens too (the loss is
the mean over those steps; a target shorter than that, such as a one-word VQA answer, counts
only its own tokens). Recipe keys: ``box_attention_weight`` (0 = off),
``box_attention_layer`` (default -1), ``box_attention_steps`` (default 1),
``box_attention_cells`` (``box``, default, or ``centre``: only the cell of the box's centre).

The trainer reaches this loss through the criterion hook ``box_attention`` that
:mod:`openofa.mini` registers (:mod:`openofa.train.extensions`): :func:`extend` wraps the
cross-entropy when the recipe sets ``box_attention_weight``, :func:`check` validates the keys.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from openofa.errors import OFAError
from openofa.train.loss import LabelSmoothedCrossEntropy, LossOutput

__all__ = ["BoxAttentionLoss", "box_cells", "extend", "check"]


def box_cells(boxes: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int],
              centre_only: bool = False) -> torch.Tensor:
    """Which patches each box covers: ``boxes`` (B, 4) as x0, y0, x1, y1 in the pixels of an image
    of ``image_size`` (height, width) cut into ``grid`` (rows, columns) -> bool (B, rows * columns),
    row-major. A cell is covered when its centre is inside the box; the cell holding the box's
    centre always is. With ``centre_only`` only that cell is."""
    rows, cols = grid
    height, width = image_size
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    if centre_only:
        cells = torch.zeros(len(boxes), rows * cols, dtype=torch.bool, device=boxes.device)
    else:
        cy = (torch.arange(rows, device=boxes.device, dtype=boxes.dtype) + 0.5) * (height / rows)
        cx = (torch.arange(cols, device=boxes.device, dtype=boxes.dtype) + 0.5) * (width / cols)
        in_x = (cx[None] >= x0) & (cx[None] <= x1)  # (B, cols)
        in_y = (cy[None] >= y0) & (cy[None] <= y1)  # (B, rows)
        cells = (in_y[:, :, None] & in_x[:, None, :]).flatten(1)
    col = ((x0 + x1)[:, 0] / 2 / (width / cols)).long().clamp(0, cols - 1)
    row = ((y0 + y1)[:, 0] / 2 / (height / rows)).long().clamp(0, rows - 1)
    cells[torch.arange(len(boxes), device=boxes.device), row * cols + col] = True
    return cells


class BoxAttentionLoss:
    """The label-smoothed cross-entropy plus the attention loss of the module doc.

    Called as ``criterion((logits, cross_attention), batch, update_num)``: the trainer runs the
    model with ``cross_attention_layer=criterion.cross_attention_layer``. Logs ``box_mass`` (the
    mean attention mass on the box at the first location token, per boxed sample)."""

    log_keys = ("box_mass", "boxed")
    #: log key -> the summed key it is a mean over (default: the number of sentences)
    log_per = {"box_mass": "boxed"}
    hidden_log_keys = ("boxed",)

    def __init__(self, cross_entropy: LabelSmoothedCrossEntropy, weight: float, layer: int = -1,
                 steps: int = 1, cells: str = "box") -> None:
        if weight <= 0:
            raise OFAError(f"box_attention_weight must be > 0, got {weight}")
        if not 1 <= steps <= 4:
            raise OFAError(f"box_attention_steps must be 1 to 4 (the box's location tokens), got {steps}")
        if cells not in ("box", "centre"):
            raise OFAError(f"box_attention_cells must be box or centre, got {cells!r}")
        self.centre_only = cells == "centre"
        self.cross_entropy = cross_entropy
        self.weight = float(weight)
        self.cross_attention_layer = int(layer)
        self.steps = int(steps)

    def __call__(self, output: Any, batch: Mapping[str, Any], update_num: int = 0) -> LossOutput:
        if not isinstance(output, tuple):
            raise OFAError("box_attention_weight: the model did not return its cross-attention "
                           "(run it with cross_attention_layer)")
        logits, attention = output
        out = self.cross_entropy(logits, batch, update_num)
        boxes = batch.get("attend_boxes")
        if boxes is None:
            return out
        boxed = ~torch.isnan(boxes).any(-1)
        if not bool(boxed.any()):
            return out
        if attention.image_grid is None:
            raise OFAError("box_attention_weight: a batch with boxes but no images")
        rows = boxed.nonzero().squeeze(1)
        images = batch["net_input"]["patch_images"]
        cells = box_cells(boxes[rows].float(), attention.image_grid, tuple(images.shape[-2:]),
                          self.centre_only)
        # the step that emits the first box token: the first position with a real target; later
        # steps count while they emit a real token other than eos (a VQA answer may be one token)
        target = batch["target"][rows]
        real = target.ne(self.cross_entropy.pad)
        first = real.float().argmax(1)
        n_cells = cells.shape[1]
        t_max = target.shape[1] - 1
        masses, counted = [], []
        for j in range(self.steps):
            step = (first + j).clamp(max=t_max)
            tok = target.gather(1, step[:, None]).squeeze(1)
            ok = (first + j <= t_max) & tok.ne(self.cross_entropy.pad) & (tok.ne(self.cross_entropy.eos) | (j == 0))
            masses.append((attention.weights[rows, :, step, :n_cells].mean(1) * cells).sum(-1))
            counted.append(ok)
        mass = torch.stack(masses, 1).clamp_min(1e-6)  # (R, steps)
        counted = torch.stack(counted, 1).float()
        aux = (-mass.log() * counted).sum(1).div(counted.sum(1)).sum()
        mass = mass[:, 0]
        out.loss = out.loss + self.weight * aux
        out.sums = {**out.sums, "box_mass": float(mass.detach().sum()), "boxed": float(len(rows))}
        return out


def extend(cfg, model_config, criterion):
    """The criterion hook: ``criterion`` (the cross-entropy) with the attention loss added when the
    recipe sets ``box_attention_weight``, else ``criterion`` itself."""
    if not cfg.box_attention_weight:
        return criterion
    return BoxAttentionLoss(criterion, cfg.box_attention_weight, cfg.box_attention_layer, cfg.box_attention_steps,
                            cfg.box_attention_cells)


def check(cfg, bad) -> None:
    """The recipe keys of the loss, checked when a recipe is loaded."""
    if cfg.box_attention_weight < 0:
        raise bad("box_attention_weight", f"must be >= 0, got {cfg.box_attention_weight}")
    if not 1 <= cfg.box_attention_steps <= 4:
        raise bad("box_attention_steps", f"must be 1 to 4 (the box's location tokens), got {cfg.box_attention_steps}")
    if cfg.box_attention_cells not in ("box", "centre"):
        raise bad("box_attention_cells", f"must be box or centre, got {cfg.box_attention_cells!r}")
    if cfg.box_attention_weight and cfg.criterion != "label_smoothed_cross_entropy":
        raise bad("box_attention_weight", f"adds to the cross-entropy; criterion {cfg.criterion} has none")
