"""CLIP ViT-B/16 in plain PyTorch, for reranking generated images (OpenAI's weight layout).

OFA's text-to-image evaluation scores each candidate image by the cosine between CLIP's image and
text embeddings (``ti_sim``) and keeps the best. The original loads OpenAI's ``ViT-B-16.pt``
with its vendored CLIP code, which rounds the convolution, linear, attention and projection
weights to float16 before loading (``convert_weights``) and then runs them as float32 on CPU;
:func:`load` does the same rounding, so scores match the original's.

Why not ``open_clip``: it loads this layout, but it imports ``torchvision``, and the torchvision
wheels on PyPI are CUDA builds that fail to import beside the CPU build of torch this project
pins (``operator torchvision::nms does not exist``). See ``docs/imagine.md``.

* :func:`load` reads a state dict in OpenAI's key layout (``visual.conv1.weight``,
  ``transformer.resblocks.N.attn.in_proj_weight``, ``text_projection`` ...) from ``.pt``/``.bin``
  (through the safe loader) or ``.safetensors``. OpenAI's own ``ViT-B-16.pt`` is a TorchScript
  archive; its ``state_dict()`` saved as a plain file loads here.
* :class:`CLIPTokenizer`: CLIP's byte-level BPE (lower-cased, ``<|startoftext|>`` 49406 ...
  ``<|endoftext|>`` 49407, 77 positions, zero-padded), built on the ``tokenizers`` library
  from the BPE merges shipped in the package.
* :func:`preprocess`: bicubic resize of the short side to 224, centre crop, CLIP's mean/std.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openofa.errors import OFAError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SOT, EOT = 49406, 49407
MERGES = Path(__file__).parent / "text" / "vocab" / "clip" / "bpe_simple_vocab_16e6_merges.txt.gz"


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int = 512
    image_resolution: int = 224
    vision_layers: int = 12
    vision_width: int = 768
    vision_patch_size: int = 16
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12

    @property
    def vision_heads(self) -> int:
        return self.vision_width // 64


class _Attention(nn.Module):
    """Multi-head attention with the packed ``in_proj`` of ``nn.MultiheadAttention``'s layout."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(c, dim=-1)
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class _MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        return self.c_proj(h * torch.sigmoid(1.702 * h))  # QuickGELU


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = _Attention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = _MLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal)
        return x


class _Vision(nn.Module):
    def __init__(self, c: CLIPConfig) -> None:
        super().__init__()
        w, p = c.vision_width, c.vision_patch_size
        self.conv1 = nn.Conv2d(3, w, p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty((c.image_resolution // p) ** 2 + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = _Transformer(w, c.vision_layers, c.vision_heads)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, c.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (B, patches, width)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    """CLIP with OpenAI's parameter names; ``encode_image`` / ``encode_text`` / :meth:`similarity`."""

    def __init__(self, config: CLIPConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or CLIPConfig()
        self.visual = _Vision(c)
        self.transformer = _Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads)
        self.token_embedding = nn.Embedding(c.vocab_size, c.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.transformer_width))
        self.ln_final = nn.LayerNorm(c.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(c.transformer_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.empty(()))

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels.to(self.text_projection))

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, causal=True))
        eot = tokens.argmax(dim=-1)  # the end token has the largest id
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection

    @torch.no_grad()
    def similarity(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Cosine (images x texts) of the L2-normalised embeddings (no logit scale), as the
        original's ``ti_sim`` score."""
        a = F.normalize(self.encode_image(pixels), dim=-1)
        b = F.normalize(self.encode_text(tokens), dim=-1)
        return a @ b.T


def fp16_keys(state_dict: Mapping[str, Any]) -> list[str]:
    """The keys the original's ``convert_weights`` stores in float16: convolution, linear and
    attention weights and biases, and the two projections (not embeddings, norms, logit scale)."""
    out = []
    for k in state_dict:
        leaf = k.rsplit(".", 1)[-1]
        if k in ("text_projection", "visual.proj") or leaf in ("in_proj_weight", "in_proj_bias"):
            out.append(k)
        elif any(p in k for p in (".out_proj.", ".c_fc.", ".c_proj.", "visual.conv1.")):
            out.append(k)
    return out


def build_from_state_dict(state_dict: Mapping[str, torch.Tensor], *, round_fp16: bool = True,
                          source: str = "CLIP weights") -> CLIP:
    """A CLIP holding ``state_dict`` (OpenAI's layout). With ``round_fp16`` the weights the
    original keeps in float16 are rounded to float16 first (then run as float32)."""
    sd = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    for extra in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(extra, None)
    try:
        width = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        tw = sd["ln_final.weight"].shape[0]
        config = CLIPConfig(
            embed_dim=sd["text_projection"].shape[1], image_resolution=patch * grid,
            vision_layers=len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")}),
            vision_width=width, vision_patch_size=patch, context_length=sd["positional_embedding"].shape[0],
            vocab_size=sd["token_embedding.weight"].shape[0], transformer_width=tw, transformer_heads=tw // 64,
            transformer_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}))
    except KeyError as e:
        raise OFAError(f"{source}: not a CLIP ViT state dict in OpenAI's layout (no {e.args[0]})") from None
    half = set(fp16_keys(sd)) if round_fp16 else set()
    weights = {k: (v.half().float() if k in half else v.float()).contiguous() for k, v in sd.items()}
    with torch.device("meta"):
        model = CLIP(config)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise OFAError(f"{source}: weights do not fit CLIP ({str(e).splitlines()[0][:200]})") from None
    return model.eval()


def load(path: str | Path, *, round_fp16: bool = True) -> CLIP:
    """CLIP from a ``.pt``/``.bin`` (safe loader) or ``.safetensors`` state dict in OpenAI's layout."""
    path = Path(path)
    if not path.is_file():
        raise OFAError(f"{path}: no such CLIP weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(path))
        except Exception as e:
            raise OFAError(f"{path}: cannot read safetensors file ({str(e).splitlines()[0]})") from None
    else:
        import zipfile

        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if any(n.endswith("/constants.pkl") for n in z.namelist()):
                    raise OFAError(f"{path}: a TorchScript archive; save its state_dict() as a plain file "
                                   "(or safetensors) and load that (TorchScript code is not run here)")
        from openofa.checkpoints.safe_pickle import load_pt

        sd = load_pt(path)
        if isinstance(sd, Mapping) and isinstance(sd.get("state_dict"), Mapping):
            sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise OFAError(f"{path}: no state dict in this file")
    return build_from_state_dict(sd, round_fp16=round_fp16, source=str(path))


# ---- text -------------------------------------------------------------------------------------------

_PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each byte, in CLIP's vocabulary order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in keep] + [chars[b] for b in range(256) if b not in keep]


class CLIPTokenizer:
    """CLIP's tokenizer: text lower-cased, whitespace collapsed, split by CLIP's pattern, byte-level
    BPE with ``</w>`` ending each word; ``<|startoftext|>`` + ids + ``<|endoftext|>``, zero-padded
    to the context length (longer texts are cut and still end with ``<|endoftext|>``)."""

    def __init__(self, merges_path: str | Path = MERGES, context_length: int = 77) -> None:
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

        self.context_length = context_length
        opener = gzip.open if str(merges_path).endswith(".gz") else open
        with opener(merges_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1] if line.strip()]
        symbols = _byte_symbols()
        vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab_list += ["<|startoftext|>", "<|endoftext|>"]
        vocab = {s: i for i, s in enumerate(vocab_list)}
        bpe = models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", continuing_subword_prefix="")
        tok = Tokenizer(bpe)
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Strip(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        self._tok = tok
        self.sot, self.eot = vocab["<|startoftext|>"], vocab["<|endoftext|>"]

    def ids(self, text: str) -> list[int]:
        import html

        text = html.unescape(html.unescape(text))
        return self._tok.encode(text, add_special_tokens=False).ids

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.sot] + self.ids(text)[: self.context_length - 2] + [self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


@lru_cache(maxsize=2)
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


# ---- images -----------------------------------------------------------------------------------------


def preprocess(images, size: int = 224) -> torch.Tensor:
    """PIL images (or one) to CLIP's input (B, 3, size, size): bicubic resize of the short side,
    centre crop, scale to [0, 1], CLIP's mean and std."""
    from PIL import Image

    if isinstance(images, Image.Image):
        images = [images]
    out = []
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    for im in images:
        im = im.convert("RGB")
        w, h = im.size
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.BICUBIC)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        im = im.crop((left, top, left + size, top + size))
        a = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out.append((a - mean) / std)
    return torch.stack(out)


def scores(model: CLIP, images, text: str) -> torch.Tensor:
    """The original's ``ti_sim`` score of each image against ``text`` (its '/' removed), (N,)."""
    tokens = tokenizer()(text.replace("/", ""))[:, : model.config.context_length]
    return model.similarity(preprocess(images, model.config.image_resolution), tokens)[:, 0]


def image_scores(model: CLIP, images, reference) -> torch.Tensor:
    """The original's ``ii_sim`` score: cosine of each image with a reference image, (N,)."""
    size = model.config.image_resolution
    a = F.normalize(model.encode_image(preprocess(images, size)), dim=-1)
    b = F.normalize(model.encode_image(preprocess([reference], size)), dim=-1)
    return (a @ b.T)[:, 0]
