"""Pretraining the image trunk alone on detection annotations (recipe ``task: trunk``).

The original never trains its ResNet trunk from nothing: it starts from ImageNet weights
(``--resnet-model-path``). A model trained from scratch has no such weights, and through the
sequence losses alone its trunk learns slowly what the objects are (docs/own_model.md). This
stage gives the trunk that start from the detection rows of the training data instead, as a
dense prediction problem that needs no transformer and costs about a third of a full step.

For every object, the cell of the trunk's output grid (stride 16) that holds the centre of its
box is trained to say

* that an object is there (a logistic output per cell, every cell of the grid trained),
* the words of its name (one logistic output per word of the file's names: ``"small red
  circle"`` sets ``small``, ``red`` and ``circle``), and
* its box, as the distances from the cell's centre to the four edges in units of two cells
  (L1 loss),

through a 1x1 convolution on the trunk's features that is thrown away afterwards. When two
centres fall in one cell the smaller box wins. The stage writes the whole model to
``<run_dir>/final`` (the transformer as initialised, the trunk trained), so the next stage of a
recipe starts from it; ``freeze_resnet: true`` there keeps the trunk as it is and makes those
steps cheaper.

Data: a detection file (JSONL ``{"image": ..., "objects": [[x1, y1, x2, y2, id, name], ...]}`` or
the original's TSV; ``ofa scenes`` writes ``detection.jsonl``). Images are resized to
``data.patch_image_size`` without augmentation. Recipe keys used: ``train_data``, ``data``
(``patch_image_size``), ``batch_size``, ``max_update``, ``lr``, ``end_lr``, ``warmup_ratio`` /
``warmup_updates``, ``weight_decay``, ``adam_betas``, ``clip_norm``, ``precision``,
``num_workers``, ``seed``, ``log_every``, ``run_dir``. It runs in one process; under ``torchrun``
the other processes wait for its result.

``task: trunk`` reaches :func:`pretrain_trunk` through the initialisation hook that
:mod:`openofa.mini` registers (:mod:`openofa.train.extensions`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openofa.errors import OFAError

__all__ = ["TrunkTargets", "TrunkHead", "trunk_losses", "pretrain_trunk"]

STRIDE = 16  # the trunk's output stride
BOX_UNIT = 2 * STRIDE  # box distances are predicted in units of two cells


class TrunkTargets(torch.utils.data.Dataset):
    """``(image, objectness, words, boxes)`` per detection row: the normalised image at
    ``size`` and, per grid cell, 1 where an object is, the multi-hot words of that object's name
    and its four edge distances from the cell's centre.

    ``cells``: which cells stand for an object: ``"centre"``, the cell holding its box centre;
    ``"box"``, also every cell whose centre lies inside its box (so any cell of an object can
    tell its name and box). Where objects share a cell the smaller box wins."""

    def __init__(self, path: str | Path, size: int, *, words: list[str] | None = None, split: str = "train",
                 image_root: str | Path | None = None, cells: str = "centre", image_cache=None) -> None:
        from openofa.data.dataset import open_records

        if cells not in ("centre", "box"):
            raise OFAError(f"trunk pretraining: data.trunk_cells must be centre or box, got {cells!r}")
        self.cells = cells
        self.image_cache = image_cache  # DecodedImages (recipe image_cache_mb)
        if size % STRIDE:
            raise OFAError(f"trunk pretraining: patch_image_size must be a multiple of {STRIDE}, got {size}")
        self.reader = open_records("detection", path, split=split, shard=None, image_root=image_root)
        self.size, self.grid = size, size // STRIDE
        if words is None:
            found = set()
            for rec in self.reader:
                for name in rec.objects or []:
                    found.update(name.split())
            words = sorted(found)
        if not words:
            raise OFAError(f"trunk pretraining: {path} names no objects")
        self.words = list(words)
        self.word_index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int):
        from openofa.data.pretrain import detection_objects
        from openofa.data.samples import load_record_image
        from openofa.vision.transforms import OFA_MEAN, OFA_STD, resize_bicubic, to_tensor_normalized

        rec = self.reader.record(index)
        img = load_record_image(rec, self.image_cache)
        w, h = img.size
        s, g = self.size, self.grid
        image = to_tensor_normalized(resize_bicubic(img, s, s), OFA_MEAN, OFA_STD)
        obj = torch.zeros(g, g)
        words = torch.zeros(g, g, len(self.words))
        boxes = torch.zeros(g, g, 4)
        area = torch.full((g, g), math.inf)
        for (x1, y1, x2, y2), name in zip(*detection_objects(rec)):
            x1, x2 = x1 * s / w, x2 * s / w
            y1, y2 = y1 * s / h, y2 * s / h
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            if not (0 <= cx < s and 0 <= cy < s):
                continue  # centre outside the image: no cell owns it
            owned = [(int(cy // STRIDE), int(cx // STRIDE))]
            if self.cells == "box":  # every cell whose centre is inside the box
                owned += [(i, j) for i in _cells_between(y1, y2, g) for j in _cells_between(x1, x2, g)
                          if (i, j) != owned[0]]
            a = (x2 - x1) * (y2 - y1)
            hot = torch.zeros(len(self.words))
            for word in name.split():
                if word in self.word_index:
                    hot[self.word_index[word]] = 1.0
            for i, j in owned:
                if a >= area[i, j]:
                    continue
                area[i, j] = a
                ccx, ccy = (j + 0.5) * STRIDE, (i + 0.5) * STRIDE
                obj[i, j] = 1.0
                words[i, j] = hot
                boxes[i, j] = torch.tensor([ccx - x1, ccy - y1, x2 - ccx, y2 - ccy]) / BOX_UNIT
        return image, obj, words, boxes


class TrunkHead(nn.Module):
    """The throw-away dense head: per cell, 1 objectness logit, one logit per word, 4 box distances."""

    def __init__(self, channels: int, num_words: int) -> None:
        super().__init__()
        self.num_words = num_words
        self.proj = nn.Conv2d(channels, 1 + num_words + 4, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.proj(features).float().permute(0, 2, 3, 1)  # B, G, G, 1 + V + 4
        return z[..., 0], z[..., 1:1 + self.num_words], z[..., 1 + self.num_words:]


class EmbeddingHead(nn.Module):
    """The head that also trains the model's own embeddings: it reads the encoder's patch
    embeddings (``image_proj``, type and position embeddings, ``patch_layernorm_embedding``), scores
    each word of a name by the dot product with that word's token embedding, and each box edge
    as a classification over the location tokens' embeddings (through one throw-away linear map
    per edge). A patch then starts out close to the words that name it, and its box is a linear
    read-out onto the tokens the decoder emits for grounding. Returns what :class:`TrunkHead`
    returns, with box logits ``(B, G, G, 4, num_bins)`` in place of the distances."""

    def __init__(self, model, word_ids: list[int]) -> None:
        super().__init__()
        cfg = model.config
        dim = cfg.encoder_embed_dim
        self.encoder = model.encoder
        self.register_buffer("word_ids", torch.tensor(word_ids, dtype=torch.long), persistent=False)
        self.bin_0, self.num_bins = int(cfg.bin_0), int(cfg.num_bins)
        self.objectness = nn.Linear(dim, 1)
        self.word_bias = nn.Parameter(torch.zeros(len(word_ids)))
        self.word_scale = nn.Parameter(torch.tensor(1.0))
        self.edges = nn.Linear(dim, 4 * dim)

    def forward(self, images: torch.Tensor):
        x, h, w = self.encoder.embed_image(images)  # B, G*G, D
        table = self.encoder.embed_tokens.weight
        words = (x @ table[self.word_ids].t()) * self.word_scale + self.word_bias
        edges = self.edges(x).view(*x.shape[:2], 4, -1)
        bins = edges @ table[self.bin_0:self.bin_0 + self.num_bins].t()
        g = (x.shape[0], h, w)
        return (self.objectness(x).float().view(*g), words.float().view(*g, -1),
                bins.float().view(*g, 4, self.num_bins))

    def parameters_to_train(self):
        """The head's own parameters and the encoder parts it reads (the trunk is added by the caller)."""
        enc = self.encoder
        own = [self.objectness.weight, self.objectness.bias, self.word_bias, self.word_scale,
               self.edges.weight, self.edges.bias]
        return own + [*enc.image_proj.parameters(), enc.type_embedding.weight, enc.embed_image_positions.weight,
                      *enc.patch_layernorm_embedding.parameters(), enc.embed_tokens.weight]


def _cells_between(lo: float, hi: float, g: int) -> range:
    """Indices of the grid cells (of ``g``) whose centre lies in ``[lo, hi]`` along one axis."""
    return range(max(0, math.ceil(lo / STRIDE - 0.5)), min(g, math.floor(hi / STRIDE - 0.5) + 1))


def box_bins(boxes: torch.Tensor, size: int, num_bins: int) -> torch.Tensor:
    """Per-cell edge distances (the targets of :class:`TrunkTargets`) -> absolute location bins
    quantized as the grounding targets are (edges outside the image count as on its border)."""
    from openofa.text.locations import quantize_box

    g = boxes.shape[-2]
    centre = (torch.arange(g, dtype=boxes.dtype, device=boxes.device) + 0.5) * STRIDE
    cx, cy = centre.view(1, g), centre.view(g, 1)
    d = boxes * BOX_UNIT
    edges = torch.stack([cx - d[..., 0], cy - d[..., 1], cx + d[..., 2], cy + d[..., 3]], -1)
    return quantize_box(edges.clamp(0, size), num_bins=num_bins, max_image_size=size)


def trunk_losses(pred, obj: torch.Tensor, words: torch.Tensor, boxes: torch.Tensor, *,
                 size: int | None = None) -> dict[str, torch.Tensor]:
    """Objectness (mean over cells), words (summed over words, mean over object cells) and box L1
    (mean over object cells and edges, x5); plus detached accuracies for the log: all words of
    the name right, and box IoU >= 0.5, over object cells."""
    p_obj, p_words, p_box = pred
    pos = obj > 0
    n = pos.sum().clamp(min=1)
    out = {"obj": F.binary_cross_entropy_with_logits(p_obj, obj)}
    out["words"] = F.binary_cross_entropy_with_logits(p_words[pos], words[pos], reduction="sum") / n
    if p_box.dim() == boxes.dim() + 1:  # box edges as location-token logits (EmbeddingHead)
        nb = p_box.shape[-1]
        target = box_bins(boxes, size, nb)[pos]
        out["box"] = F.cross_entropy(p_box[pos].reshape(-1, nb), target.reshape(-1), reduction="sum") / (4 * n)
        with torch.no_grad():
            iou = _iou(_as_distances(p_box[pos].argmax(-1).float()), _as_distances(target.float()))
    else:
        out["box"] = 5.0 * F.l1_loss(p_box[pos], boxes[pos], reduction="sum") / (4 * n)
        with torch.no_grad():
            iou = _iou(p_box[pos], boxes[pos])
    out["loss"] = out["obj"] + out["words"] + out["box"]
    with torch.no_grad():
        right = ((p_words[pos] > 0) == (words[pos] > 0.5)).all(-1).float()
        out["name_acc"] = right.sum() / n
        out["box_iou50"] = (iou >= 0.5).float().sum() / n
    return out


def _as_distances(bins: torch.Tensor) -> torch.Tensor:
    """Absolute (x1, y1, x2, y2) -> distances from the origin, the (left, top, right, bottom)
    form :func:`_iou` takes."""
    return torch.stack([-bins[:, 0], -bins[:, 1], bins[:, 2], bins[:, 3]], -1)


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes given as (left, top, right, bottom) distances from one common point."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) + torch.minimum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) + torch.minimum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    area = lambda t: (t[:, 0] + t[:, 2]).clamp(min=0) * (t[:, 1] + t[:, 3]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def pretrain_trunk(cfg, image_cache=None) -> dict[str, Any]:
    """Run a ``task: trunk`` stage (see the module docstring). Returns a summary like the
    trainer's, with ``log``: the mean losses and accuracies of every ``log_every`` updates."""
    from openofa.checkpoints import save_pretrained
    from openofa.mini.updates import Updates
    from openofa.train.model import build_model_for
    from openofa.train.optim import PolynomialDecaySchedule, build_optimizer, warmup_steps

    run_dir = Path(cfg.run_dir)
    final = run_dir / "final"
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:  # under torchrun: rank 0 trains, the others wait for its weights
        while not (final / "model.safetensors").is_file():
            time.sleep(2.0)
        return {"num_updates": 0, "run_dir": str(run_dir), "rank": rank}
    if not cfg.train_data or not isinstance(cfg.train_data, str):
        raise OFAError("task: trunk needs train_data: one detection file (e.g. detection.jsonl of ofa scenes)")
    if cfg.max_update <= 0:
        raise OFAError("task: trunk needs max_update > 0")
    torch.manual_seed(cfg.seed)
    model = build_model_for(cfg)  # its patch_image_size is the recipe's data.patch_image_size
    size = model.config.patch_image_size
    options = cfg.data or {}
    data = TrunkTargets(cfg.train_data, size, cells=options.get("trunk_cells", "centre"), image_cache=image_cache)
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    model.to(device)
    trunk = model.encoder.embed_images
    kind = options.get("trunk_head", "dense")
    if kind == "dense":
        head = TrunkHead(trunk.out_channels, len(data.words)).to(device)
        params = list(trunk.parameters()) + list(head.parameters())
        features = trunk
    elif kind == "embedding":
        from openofa.text.tokenizer import OFATokenizer

        tok = OFATokenizer.for_config(model.config)
        head = EmbeddingHead(model, [tok.encode(" " + w)[0] for w in data.words]).to(device)
        params = list(trunk.parameters()) + head.parameters_to_train()
        features = nn.Identity()
    else:
        raise OFAError(f"task: trunk: data.trunk_head must be dense or embedding, got {kind!r}")
    opt = build_optimizer(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                          weight_decay=cfg.weight_decay)
    total = cfg.total_num_update or cfg.max_update
    sched = PolynomialDecaySchedule(opt, lr=cfg.lr, total_updates=total, end_lr=cfg.end_lr, power=cfg.lr_power,
                                    warmup_updates=warmup_steps(total, cfg.warmup_ratio, cfg.warmup_updates))
    # The order comes from the sampler's own generator: the loader also draws its workers' base
    # seed from its generator, once per epoch without persistent workers and once in all with
    # them, so sharing one generator would make the order depend on num_workers. The samples
    # themselves are not random, so loader workers change nothing but the speed.
    order = torch.utils.data.RandomSampler(data, generator=torch.Generator().manual_seed(cfg.seed))
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, sampler=order, drop_last=True,
                                         num_workers=cfg.num_workers,
                                         generator=torch.Generator().manual_seed(cfg.seed + 1),
                                         persistent_workers=cfg.num_workers > 0)
    if len(loader) == 0:
        raise OFAError(f"task: trunk: {cfg.train_data} has fewer rows ({len(data)}) than one batch ({cfg.batch_size})")
    autocast = cfg.precision in ("bf16", "fp16")
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    print(f"trunk pretraining: {sum(p.numel() for p in params):,} parameters, {len(data)} images at {size} px, "
          f"{len(data.words)} words, {cfg.max_update} updates", file=sys.stderr)
    trunk.train()
    loop = Updates("trunk", cfg, opt, sched, params)
    while not loop.done:
        for batch in loader:
            image, obj, words, boxes = (t.to(device) for t in batch)
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                out = trunk_losses(head(features(image)), obj, words, boxes, size=size)
            loop.step(out)
            if loop.done:
                break
    save_pretrained(final, model.config, model.cpu().state_dict())
    return {"num_updates": loop.count, "run_dir": str(run_dir), "rank": 0, "log": loop.history}
