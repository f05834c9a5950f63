"""The image tokenizer of OFA's text-to-image model: a GumbelVQ VQGAN in plain PyTorch.

It reads the layout the original uses (taming-transformers' ``GumbelVQ``: a PyTorch Lightning
``last.ckpt`` whose ``state_dict`` holds ``encoder.*``, ``decoder.*``, ``quant_conv``,
``post_quant_conv`` and ``quantize.{proj,embed}``, described by a ``model.yaml``). The file is read
through :func:`openofa.checkpoints.safe_pickle.load_pt`: tensors and plain containers only;
Lightning's callback and hyper-parameter objects become inert records, nothing is executed.

* ``encode(images) -> codes``: images (B, 3, H, W) in [-1, 1] to code ids (B, H/f, W/f). The
  code is the arg-max of the quantizer's logits (deterministic). The original always adds Gumbel
  noise, in evaluation too; ``encode(images, gumbel=True, generator=g)`` does that (with the
  global generator seeded as the original's, it draws the same codes).
* ``decode(codes) -> images``: code ids (B, h, w) to images (B, 3, h*f, w*f), unclamped;
  :func:`to_pil` maps them to 8-bit images as the original's ``custom_to_pil`` does.

:func:`load` is the public entry point; :func:`default_config` is the configuration of the
checkpoint OFA ships (8192 codes, factor 8), used when no ``model.yaml`` is found.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from openofa.errors import OFAError


@dataclass
class VQGANConfig:
    embed_dim: int = 256
    n_embed: int = 8192
    z_channels: int = 256
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple = (1, 1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (32,)
    double_z: bool = False
    extra: dict = field(default_factory=dict)  # model.yaml values we do not need (kl_weight ...)

    @property
    def factor(self) -> int:
        """Pixels per code along a side."""
        return 2 ** (len(self.ch_mult) - 1)


def default_config() -> VQGANConfig:
    return VQGANConfig()


def config_from_yaml(data: Mapping[str, Any], source: str = "model.yaml") -> VQGANConfig:
    """The configuration in a taming-transformers ``model.yaml`` (``model.target`` must be a GumbelVQ)."""
    try:
        model = data["model"]
        target = str(model.get("target", ""))
        params = dict(model["params"])
        dd = dict(params["ddconfig"])
    except (KeyError, TypeError, AttributeError):
        raise OFAError(f"{source}: not a taming-transformers model config (needs model.params.ddconfig)") from None
    if not target.endswith("GumbelVQ"):
        raise OFAError(f"{source}: model.target is {target!r}; only GumbelVQ (OFA's image tokenizer) is supported")
    names = ("z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks",
             "attn_resolutions", "double_z")
    kw = {k: dd[k] for k in names if k in dd}
    for k in ("ch_mult", "attn_resolutions"):
        if k in kw:
            kw[k] = tuple(int(v) for v in kw[k])
    try:
        return VQGANConfig(embed_dim=int(params.get("embed_dim", 256)), n_embed=int(params.get("n_embed", 8192)),
                           extra={k: v for k, v in params.items() if k not in ("embed_dim", "n_embed", "ddconfig")},
                           **kw)
    except (TypeError, ValueError) as e:
        raise OFAError(f"{source}: bad ddconfig ({e})") from None


# ---- building blocks ------------------------------------------------------------------------------


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map (1x1 convolutions)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q, k, v = (m(h).reshape(b, c, hh * ww) for m in (self.q, self.k, self.v))
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (c ** -0.5), dim=2)  # (b, queries, keys)
        out = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, then a stride-2 convolution


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution: residual blocks, each followed by attention at the attention resolutions."""

    def __init__(self, cin: int, cout: int, blocks: int, attn: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout) for i in range(blocks))
        self.attn = nn.ModuleList(AttnBlock(cout) for _ in range(blocks)) if attn else nn.ModuleList()

    def run(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x


class Encoder(nn.Module):
    def __init__(self, c: VQGANConfig) -> None:
        super().__init__()
        mult = (1,) + tuple(c.ch_mult)
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        res = c.resolution
        self.down = nn.ModuleList()
        for i in range(len(c.ch_mult)):
            level = _Level(c.ch * mult[i], c.ch * mult[i + 1], c.num_res_blocks, res in c.attn_resolutions)
            if i != len(c.ch_mult) - 1:
                level.downsample = Downsample(c.ch * mult[i + 1])
                res //= 2
            self.down.append(level)
        top = c.ch * c.ch_mult[-1]
        self.mid = _Mid(top)
        self.norm_out = _norm(top)
        self.conv_out = nn.Conv2d(top, 2 * c.z_channels if c.double_z else c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, c: VQGANConfig) -> None:
        super().__init__()
        n = len(c.ch_mult)
        block_in = c.ch * c.ch_mult[-1]
        res = c.resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(c.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in)
        levels: list[_Level] = [None] * n  # type: ignore[list-item]
        for i in reversed(range(n)):
            out = c.ch * c.ch_mult[i]
            level = _Level(block_in, out, c.num_res_blocks + 1, res in c.attn_resolutions)
            block_in = out
            if i != 0:
                level.upsample = Upsample(out)
                res *= 2
            levels[i] = level
        self.up = nn.ModuleList(levels)  # index = resolution level, as in the checkpoint's keys
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, c.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class GumbelQuantize(nn.Module):
    """Logits over the codebook from a 1x1 convolution; the code vector is a row of ``embed``."""

    def __init__(self, channels: int, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)


class GumbelVQ(nn.Module):
    def __init__(self, config: VQGANConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or default_config()
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.quant_conv = nn.Conv2d(c.z_channels, c.z_channels, 1)
        self.quantize = GumbelQuantize(c.z_channels, c.n_embed, c.embed_dim)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def num_codes(self) -> int:
        return self.config.n_embed

    def code_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Quantizer logits (B, n_embed, H/f, W/f) of images (B, 3, H, W) in [-1, 1]."""
        return self.quantize.proj(self.quant_conv(self.encoder(images)))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, gumbel: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Code ids (B, H/f, W/f). Deterministic arg-max by default; ``gumbel=True`` adds Gumbel
        noise first, as the original always does (drawn from ``generator``, or the global one)."""
        images = self._check_images(images)
        logits = self.code_logits(images)
        if gumbel:
            noise = torch.empty_like(logits).exponential_(generator=generator).log().neg()
            logits = logits + noise
        return logits.argmax(dim=1)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code ids (B, h, w) to code vectors (B, embed_dim, h, w)."""
        return self.quantize.embed.weight[codes].permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, h*f, w*f), unclamped (about [-1, 1]), from code ids (B, h, w)."""
        codes = torch.as_tensor(codes, dtype=torch.long, device=self.quantize.embed.weight.device)
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3:
            raise OFAError(f"codes must be (batch, rows, columns), got shape {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise OFAError(f"code ids must be in [0, {self.num_codes}), got {int(codes.min())}..{int(codes.max())}")
        return self.decoder(self.post_quant_conv(self.embed_codes(codes)))

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        if images.dim() == 3:
            images = images[None]
        f = self.factor
        if images.dim() != 4 or images.shape[1] != self.config.in_channels or images.shape[2] % f or images.shape[3] % f:
            raise OFAError(f"images must be (batch, {self.config.in_channels}, H, W) with H and W multiples of {f}, "
                           f"got shape {tuple(images.shape)}")
        return images.to(self.quantize.embed.weight)


# ---- pixels ---------------------------------------------------------------------------------------


def to_pil(images: torch.Tensor) -> list:
    """Images (B, 3, H, W) as 8-bit PIL images: clamp to [-1, 1], ``(x + 1) / 2``, times 255,
    truncated (the original's ``custom_to_pil``)."""
    from PIL import Image

    x = images.detach().float().clamp(-1.0, 1.0)
    x = ((x + 1.0) / 2.0).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((255 * a).astype("uint8"), "RGB") for a in x]


def from_pil(images, size: int = 256) -> torch.Tensor:
    """PIL images (or one) to a (B, 3, size, size) tensor in [-1, 1]: the short side resized to
    ``size`` with Lanczos as the original's code extraction does, then centre-cropped to a square
    (the original does not crop and needs square inputs)."""
    import numpy as np
    from PIL import Image

    if isinstance(images, Image.Image):
        images = [images]
    out = []
    for im in images:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.LANCZOS)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        a = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out.append(2.0 * a - 1.0)
    return torch.stack(out)


# ---- loading ---------------------------------------------------------------------------------------

_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.")


def _find_files(path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        for name in ("last.ckpt", "vqgan.ckpt", "model.ckpt", "vqgan.safetensors"):
            if (path / name).is_file():
                ckpt = path / name
                break
        else:
            cands = sorted(path.glob("*.ckpt")) + sorted(path.glob("*.safetensors"))
            if not cands:
                raise OFAError(f"{path}: no VQGAN checkpoint (last.ckpt) in this folder")
            ckpt = cands[0]
        folder = path
    elif path.is_file():
        ckpt, folder = path, path.parent
    else:
        raise OFAError(f"{path}: no such file or folder")
    for name in ("model.yaml", "config.yaml", ckpt.stem + ".yaml"):
        if (folder / name).is_file():
            return ckpt, folder / name
    return ckpt, None


def _state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise OFAError(f"{source}: no state_dict in this file")
    out = {}
    for k, v in obj.items():
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            k = k[len("model."):] if k.startswith("model.") and k[6:].startswith(_PARTS) else k
            if k.startswith(_PARTS):
                out[k] = v
    if not out:
        raise OFAError(f"{source}: no VQGAN weights (encoder.*, decoder.*, quantize.*) in this file")
    return out


def build_from_state_dict(state_dict: Mapping[str, torch.Tensor], config: VQGANConfig | None = None,
                          source: str = "VQGAN weights") -> GumbelVQ:
    """A GumbelVQ holding ``state_dict`` (taming-transformers key names; ``loss.*`` and other keys ignored)."""
    with torch.device("meta"):
        model = GumbelVQ(copy.deepcopy(config) if config is not None else None)
    weights = {k: v.float().contiguous() for k, v in state_dict.items() if k.startswith(_PARTS)}
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    if missing:
        raise OFAError(f"{source}: missing {len(missing)} VQGAN weights, e.g. {', '.join(missing[:3])}")
    bad = [k for k in own if tuple(weights[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise OFAError(f"{source}: {k} has shape {tuple(weights[k].shape)}, the config gives {tuple(own[k].shape)} "
                       "(does model.yaml belong to this checkpoint?)")
    model.load_state_dict({k: weights[k] for k in own}, strict=True, assign=True)
    return model.eval()


def load(path: str | Path) -> GumbelVQ:
    """Load a GumbelVQ from a taming-transformers checkpoint: a folder with ``last.ckpt`` and
    ``model.yaml`` (as in OFA's ``image_gen`` download), or the ``.ckpt`` file itself (its
    ``model.yaml`` read from beside it; the default configuration when there is none). A
    ``.safetensors`` file with the same key names loads too."""
    path = Path(path)
    ckpt, yaml_path = _find_files(path)
    config = default_config()
    if yaml_path is not None:
        import yaml

        try:
            data = yaml.safe_load(yaml_path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise OFAError(f"{yaml_path}: cannot read ({str(e).splitlines()[0]})") from None
        config = config_from_yaml(data, str(yaml_path))
    if ckpt.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(ckpt))
        except Exception as e:
            raise OFAError(f"{ckpt}: cannot read safetensors file ({str(e).splitlines()[0]})") from None
    else:
        from openofa.checkpoints.safe_pickle import load_pt

        raw = load_pt(ckpt)
    return build_from_state_dict(_state_dict(raw, str(ckpt)), config, str(ckpt))


def state_dict_keys(config: VQGANConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of a GumbelVQ state dict (the original's layout)."""
    with torch.device("meta"):
        model = GumbelVQ(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


__all__ = ["GumbelVQ", "VQGANConfig", "load", "default_config", "config_from_yaml", "build_from_state_dict",
           "to_pil", "from_pil", "state_dict_keys"]
