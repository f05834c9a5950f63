"""Training the small model's image tokenizer (recipe ``task: vq``).

OFA draws by sampling VQGAN codes; the original's tokenizer is a GumbelVQ with 8192 codes trained
on millions of images (:mod:`openofa.vqgan`). The project's drawing model needs one that fits in
the package and learns on CPU: the same architecture and key layout, much smaller
(:func:`small_config`: 512 codes, factor 8, 1.2 M parameters), trained here on the scenes
it draws. It is saved as ``vqgan.safetensors`` + ``model.yaml`` (taming-transformers'
configuration), so :func:`openofa.vqgan.load` reads it like the original's file.

Training. A straight-through Gumbel-softmax (taming-transformers' way) collapsed here to about 16
codes of 512 within 300 updates (temperature decaying from 1 to 1/16, KL weight 5e-4): too few to
draw shapes. The
tokenizer is therefore trained as a VQ-VAE with a nearest-neighbour codebook (van den Oord et al.
2017) kept by exponential moving averages, with every code placed on an encoder output of the first
batch and codes unused for a while restarted on outputs of the current batch (the usual remedy for
dead codes), and a commitment loss; reconstruction is L1 + MSE
(the scenes are flat colours; there are no pretrained LPIPS weights here, and no adversarial term).
A nearest-neighbour choice is an arg-max of logits ``2 z.e_k - |e_k|^2``: a 1x1 convolution,
exactly GumbelVQ's ``quantize.proj`` with ``quantize.embed`` = the codebook. :func:`to_gumbel`
writes it so, and :meth:`~openofa.vqgan.GumbelVQ.encode` picks the nearest code.

The stage then encodes every image of ``train_data`` (and of ``data.vq_encode``'s other files) into
an imagine data file (``id``, codes, caption; the original's ``coco_vqgan_*.tsv`` columns) beside
it, and writes ``<run_dir>/final``: the VQ under ``final/vqgan/`` and a freshly initialised OFA
(the recipe's model) that the next stage, ``task: imagine``, trains on those codes.

Recipe keys: ``train_data`` (JSONL ``{"id", "image", "text"}``, as :mod:`openofa.mini.draw`
writes), ``data`` (``patch_image_size``; ``vq_*`` below), ``batch_size``, ``max_update``, ``lr``,
``end_lr``, ``warmup_ratio``, ``seed``, ``log_every``, ``run_dir``. ``data.vq_codes`` (512),
``data.vq_commitment`` (0.25), ``data.vq_decay`` (0.99, of the codebook's moving averages),
``precision`` (bf16: autocast on CPU), ``data.vq_encode`` (more JSONL files to encode, e.g. the validation set).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from openofa.errors import OFAError
from openofa.vqgan import GumbelVQ, VQGANConfig

__all__ = ["small_config", "config_yaml", "save_vq", "Codebook", "logits_of", "to_gumbel", "train_step_losses", "read_images", "encode_file",
           "train_vq", "VQ_FOLDER"]

VQ_FOLDER = "vqgan"  # beside the drawing model (openofa.tasks.imagine finds it there)


def small_config(n_embed: int = 512, resolution: int = 64) -> VQGANConfig:
    """The small tokenizer: factor 8 as the original's (an 8x8 grid at 64 px), narrower and shallower."""
    return VQGANConfig(embed_dim=64, n_embed=n_embed, z_channels=64, resolution=resolution, ch=32,
                       ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=())


def config_yaml(config: VQGANConfig) -> str:
    """taming-transformers' ``model.yaml`` for ``config`` (what :func:`openofa.vqgan.load` reads)."""
    dd = {"double_z": config.double_z, "z_channels": config.z_channels, "resolution": config.resolution,
          "in_channels": config.in_channels, "out_ch": config.out_ch, "ch": config.ch,
          "ch_mult": list(config.ch_mult), "num_res_blocks": config.num_res_blocks,
          "attn_resolutions": list(config.attn_resolutions), "dropout": 0.0}
    data = {"model": {"target": "taming.models.vqgan.GumbelVQ",
                      "params": {"embed_dim": config.embed_dim, "n_embed": config.n_embed, "kl_weight": 5e-4,
                                 "temperature_scheduler_config": None, "ddconfig": dd}}}
    return json.dumps(data, indent=2) + "\n"  # JSON is YAML


def save_vq(model: GumbelVQ, folder: str | Path) -> Path:
    """Write ``vqgan.safetensors`` (taming's key names, float32) and ``model.yaml`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()},
              str(folder / "vqgan.safetensors"))
    (folder / "model.yaml").write_text(config_yaml(model.config), encoding="utf-8")
    return folder


class Codebook:
    """A nearest-neighbour codebook kept by exponential moving averages, restarting unused codes."""

    def __init__(self, n: int, dim: int, decay: float = 0.99, generator: torch.Generator | None = None,
                 dead_below: float = 0.2) -> None:
        self.decay, self.gen, self.dead_below = decay, generator, dead_below
        self.embed = torch.randn(n, dim, generator=generator) * 0.1
        self.sum = self.embed.clone()
        self.count = torch.zeros(n)  # every code starts unused: the first batch places them all

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code ids (B, h, w) of features (B, dim, h, w)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return logits_of(flat, self.embed).argmax(1).view(z.shape[0], z.shape[2], z.shape[3])

    @torch.no_grad()
    def update(self, z: torch.Tensor, codes: torch.Tensor) -> int:
        """One moving-average step on a batch's features and codes; returns how many codes were restarted."""
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        one_hot = F.one_hot(codes.reshape(-1), self.embed.shape[0]).float()
        fresh = bool((self.count == 0).all())
        if fresh:  # the first batch: place every code on a feature of it, then start averaging
            self.embed = flat[torch.randint(0, flat.shape[0], (len(self.embed),), generator=self.gen)]
            self.sum, self.count = self.embed.clone(), torch.ones(len(self.embed))
            return len(self.embed)
        self.count.mul_(self.decay).add_(one_hot.sum(0), alpha=1 - self.decay)
        self.sum.mul_(self.decay).add_(one_hot.t() @ flat, alpha=1 - self.decay)
        self.embed = self.sum / self.count.clamp_min(1e-5)[:, None]
        dead = torch.nonzero(self.count < self.dead_below).flatten()
        if len(dead):  # restart unused codes on this batch's features
            pick = torch.randint(0, flat.shape[0], (len(dead),), generator=self.gen)
            self.embed[dead] = flat[pick]
            self.sum[dead] = flat[pick]
            self.count[dead] = 1.0  # a restarted code has this many updates to win a feature
        return len(dead)


def logits_of(flat: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """``2 z.e_k - |e_k|^2``: the nearest code has the largest (``-|z - e_k|^2`` up to a constant per row)."""
    return 2 * flat @ embed.t() - (embed ** 2).sum(1)[None]


def train_step_losses(model: GumbelVQ, codebook: Codebook, images: torch.Tensor,
                      commitment: float = 0.25) -> dict[str, torch.Tensor]:
    """Reconstruction through the nearest code (straight-through) plus the commitment loss; also
    updates the codebook."""
    z = model.quant_conv(model.encoder(images))
    codes = codebook.nearest(z.detach().float())
    e = codebook.embed[codes].permute(0, 3, 1, 2).to(z)
    z_q = z + (e - z).detach()
    recon = model.decoder(model.post_quant_conv(z_q))
    l1 = (recon - images).abs().mean()
    mse = F.mse_loss(recon, images)
    commit = F.mse_loss(z, e)
    restarted = codebook.update(z, codes) if model.training else 0
    return {"loss": l1 + mse + commitment * commit, "l1": l1, "mse": mse, "commit": commit,
            "codes_used": torch.tensor(float(codes.unique().numel())), "restarted": torch.tensor(float(restarted))}


@torch.no_grad()
def to_gumbel(model: GumbelVQ, codebook: Codebook) -> GumbelVQ:
    """Write the codebook into GumbelVQ's quantizer: ``embed`` = the codes, ``proj`` = the 1x1
    convolution whose arg-max is the nearest code."""
    embed = codebook.embed.to(model.quantize.embed.weight)
    model.quantize.embed.weight.copy_(embed)
    model.quantize.proj.weight.copy_((2 * embed)[:, :, None, None])
    model.quantize.proj.bias.copy_(-(embed ** 2).sum(1))
    return model


def _rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise OFAError(f"{path}: no such file (task: vq needs the JSONL that openofa.mini.draw writes)")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rows.append({"id": rec["id"], "image": str(rec["image"]), "text": str(rec["text"])})
            except (ValueError, KeyError, TypeError) as e:
                raise OFAError(f"{path}, line {n}: not a drawing row with id, image and text ({e})") from None
    if not rows:
        raise OFAError(f"{path}: no rows")
    return rows


def read_images(path: str | Path, size: int) -> tuple[list[dict], torch.Tensor]:
    """The rows of a drawing JSONL and their images, (N, 3, size, size) uint8."""
    import numpy as np
    from PIL import Image

    from openofa.vision.transforms import resize_bicubic

    rows = _rows(path)
    root = Path(path).parent
    out = torch.empty(len(rows), 3, size, size, dtype=torch.uint8)
    for i, r in enumerate(rows):
        try:
            with Image.open(root / r["image"]) as im:
                im = resize_bicubic(im.convert("RGB"), size, size)
                out[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except OSError as e:
            raise OFAError(f"{path}: image {r['image']} cannot be read ({e})") from None
    return rows, out


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)


@torch.no_grad()
def encode_file(model: GumbelVQ, path: str | Path, out: str | Path, batch: int = 64,
                loaded: tuple[list[dict], torch.Tensor] | None = None) -> Path:
    """Encode the images of a drawing JSONL into an imagine data file ``out``: JSONL rows
    ``{"id", "text", "code"}`` with the codes space-separated in raster order. ``loaded``: the
    file's rows and images as :func:`read_images` gave them (not read again)."""
    rows, images = loaded if loaded is not None else read_images(path, model.config.resolution)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    with out.open("w", encoding="utf-8") as fh:
        for i in range(0, len(rows), batch):
            codes = model.encode(_to_unit(images[i:i + batch])).flatten(1)
            for r, c in zip(rows[i:i + batch], codes.tolist()):
                fh.write(json.dumps({"id": r["id"], "text": r["text"], "code": " ".join(map(str, c))}) + "\n")
    return out


def codes_file(path: str | Path) -> Path:
    """Where :func:`train_vq` writes the codes of a drawing JSONL: ``<name>.codes.jsonl`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + ".codes.jsonl")


def train_vq(cfg, image_cache=None) -> dict[str, Any]:
    """Run a ``task: vq`` stage (see the module docstring)."""
    from openofa.checkpoints import save_pretrained
    from openofa.mini.updates import Updates
    from openofa.train.model import build_model_for
    from openofa.train.optim import PolynomialDecaySchedule, build_optimizer, warmup_steps

    run_dir = Path(cfg.run_dir)
    final = run_dir / "final"
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 trains, the others wait
        while not (final / "model.safetensors").is_file():
            time.sleep(2.0)
        return {"num_updates": 0, "run_dir": str(run_dir), "rank": int(os.environ["RANK"])}
    if not cfg.train_data or not isinstance(cfg.train_data, str):
        raise OFAError("task: vq needs train_data: one drawing file (draw.jsonl of openofa.mini.draw)")
    if cfg.max_update <= 0:
        raise OFAError("task: vq needs max_update > 0")
    options = dict(cfg.data or {})
    size = int(options.get("patch_image_size", 64))
    torch.manual_seed(cfg.seed)
    model = GumbelVQ(small_config(int(options.get("vq_codes", 512)), size))
    gen = torch.Generator().manual_seed(cfg.seed)
    codebook = Codebook(model.config.n_embed, model.config.embed_dim, float(options.get("vq_decay", 0.99)), gen)
    commitment = float(options.get("vq_commitment", 0.25))
    # the quantizer's own parameters are written from the codebook at the end (to_gumbel)
    rows, images = read_images(cfg.train_data, size)
    if len(rows) < cfg.batch_size:
        raise OFAError(f"task: vq: {cfg.train_data} has fewer rows ({len(rows)}) than one batch ({cfg.batch_size})")
    params = [p for n, p in model.named_parameters() if not n.startswith("quantize.")]
    opt = build_optimizer(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=0.0)
    total = cfg.total_num_update or cfg.max_update
    sched = PolynomialDecaySchedule(opt, lr=cfg.lr, total_updates=total, end_lr=cfg.end_lr, power=cfg.lr_power,
                                    warmup_updates=warmup_steps(total, cfg.warmup_ratio, cfg.warmup_updates))
    print(f"vq training: {sum(p.numel() for p in params):,} parameters, {len(rows)} images at {size} px, "
          f"{model.config.n_embed} codes, {cfg.max_update} updates", file=sys.stderr)
    model.train()
    loop = Updates("vq", cfg, opt, sched, params)
    while not loop.done:
        order = torch.randperm(len(rows), generator=gen)
        for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            batch = _to_unit(images[order[i:i + cfg.batch_size]])
            flip = torch.rand(batch.shape[0], generator=gen) < 0.5  # the tokenizer does not care about sides
            batch[flip] = batch[flip].flip(-1)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                out = train_step_losses(model, codebook, batch, commitment)
            loop.step(out)
            if loop.done:
                break
    to_gumbel(model, codebook).eval()
    for path in [cfg.train_data, *list(options.get("vq_encode") or [])]:
        written = encode_file(model, path, codes_file(path), loaded=(rows, images) if path == cfg.train_data else None)
        print(f"vq: codes of {path} in {written}", file=sys.stderr)
    ofa = build_model_for(cfg)
    if ofa.config.code_dict_size != model.config.n_embed or ofa.config.code_image_size != size:
        raise OFAError(f"task: vq: the model's code_dict_size {ofa.config.code_dict_size} and code_image_size "
                       f"{ofa.config.code_image_size} must equal the tokenizer's {model.config.n_embed} codes at {size} px")
    save_pretrained(final, ofa.config, ofa.state_dict())
    save_vq(model, final / VQ_FOLDER)
    return {"num_updates": loop.count, "run_dir": str(run_dir), "rank": 0, "log": loop.history}
