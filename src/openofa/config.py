"""Model sizes: one dataclass holding every architecture hyperparameter, and a registry of named sizes.

The field names follow the original's argument names (``encoder_embed_dim``, ``resnet_type``...) so
that a checkpoint's ``cfg.model`` / ``args`` maps onto this class field by field
(see :func:`OFAConfig.from_original`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from openofa.errors import OFAError

# bottleneck blocks in each of the three stages; "resnet-small" is the project's own small trunk
RESNET_LAYERS = {"resnet50": (3, 4, 6), "resnet101": (3, 4, 23), "resnet152": (3, 8, 36), "resnet-small": (1, 1, 1)}


_KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "str | None": "a string or null", "dict": "an object"}


@dataclass
class OFAConfig:
    # transformer
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_embed_dim: int = 768
    decoder_embed_dim: int = 768
    encoder_attention_heads: int = 12
    decoder_attention_heads: int = 12
    encoder_ffn_embed_dim: int = 3072
    decoder_ffn_embed_dim: int = 3072
    # image trunk
    resnet_type: str = "resnet101"
    resnet_width: int = 64  # planes of the first stage (64 in every official size); output = 16 * width
    resnet_drop_path_rate: float = 0.0
    # vocabulary
    vocab_size: int = 59457
    pad: int = 1
    bos: int = 0
    eos: int = 2
    unk: int = 3
    num_bins: int = 1000
    code_dict_size: int = 8192
    language: str = "en"  # "en" (GPT-2 BPE) or "zh" (BERT wordpiece)
    # None: the language's whole dict.txt; a name: only the text symbols of dict.<name>.txt (small models)
    text_vocab: str | None = None
    # positions
    max_source_positions: int = 1024
    max_target_positions: int = 1024
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    attn_scale_factor: float = 2.0
    code_image_size: int = 128
    # add the position embeddings to the encoder's token and patch embeddings too, not only to the
    # attention bias (the original's --entangle-position-embedding; off in every official model)
    entangle_position_embedding: bool = False
    # the original's --disable-entangle: the decoder's input is its token embedding alone, without the
    # absolute position embedding (the positions still enter through the attention biases). Every
    # official training script passes it, so every released checkpoint says True; the architecture's
    # default (False) adds them, as the project's own small model was trained
    disable_entangle: bool = False
    # the original's --interpolate-position: image position embeddings learnt for an
    # orig_patch_image_size grid, bilinearly interpolated to a larger grid (OFA-OCR)
    interpolate_position: bool = False
    orig_patch_image_size: int = 256
    # how training from scratch initialises the rows of <bin_k>: "normal" like every other token,
    # or "fourier" (cos/sin of k at geometric periods, so neighbouring bins start out similar and a
    # box edge is a smooth read-out; the project's small model)
    location_embedding_init: str = "normal"
    # normformer-style extras used by every official checkpoint
    scale_attn: bool = True
    scale_fc: bool = True
    scale_heads: bool = True
    scale_resids: bool = False
    # regularisation (training only; zero at inference)
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.0
    # the original's parameter-efficient tuning flags (openofa/petl/): a bottleneck adapter of
    # adapter_dim in every layer's FFN branch, and per-layer key/value prefixes of
    # *_prompt_length positions for the encoder's and the decoder's self-attention, optionally
    # made by a two-layer projection of width *_prompt_dim (0: twice the model width)
    adapter: bool = False
    adapter_dim: int = 200
    # π-Tuning (openofa/petl/pi.py): each layer's adapter is a mix of this many task experts
    # (0: one plain adapter, the original's)
    adapter_experts: int = 0
    # a second adapter after each self-attention, before its residual (the π-Tuning code's
    # adapter1; the original has only the FFN one)
    attn_adapter: bool = False
    encoder_prompt: bool = False
    encoder_prompt_type: str = "prefix"
    encoder_prompt_length: int = 100
    encoder_prompt_projection: bool = False
    encoder_prompt_dim: int = 0
    decoder_prompt: bool = False
    decoder_prompt_type: str = "prefix"
    decoder_prompt_length: int = 100
    decoder_prompt_projection: bool = False
    decoder_prompt_dim: int = 0
    # task-level settings carried with a checkpoint (do not change parameter shapes)
    patch_image_size: int = 480
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):  # a config file's "3" or 3.0 where a count belongs is an error, not a crash
            value, kind = getattr(self, f.name), str(f.type)
            if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
                continue
            ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
                  "float": lambda v: isinstance(v, float),
                  "bool": lambda v: isinstance(v, bool),
                  "str": lambda v: isinstance(v, str),
                  "str | None": lambda v: v is None or isinstance(v, str),
                  "dict": lambda v: isinstance(v, dict)}.get(kind, lambda v: True)(value)
            if not ok:
                raise OFAError(f"config field {f.name} must be {_KIND_NAMES.get(kind, kind)}, got {value!r:.40}")
        if self.resnet_type not in RESNET_LAYERS:
            raise OFAError(
                f"unknown resnet_type {self.resnet_type!r}; expected one of {sorted(RESNET_LAYERS)}"
            )
        for side in ("encoder", "decoder"):
            dim = getattr(self, f"{side}_embed_dim")
            heads = getattr(self, f"{side}_attention_heads")
            if dim % heads:
                raise OFAError(f"{side}_embed_dim {dim} is not divisible by {side}_attention_heads {heads}")
        if self.encoder_embed_dim != self.decoder_embed_dim:
            raise OFAError("encoder_embed_dim and decoder_embed_dim must be equal (embeddings are shared)")
        for side in ("encoder", "decoder"):
            if getattr(self, f"{side}_prompt") and getattr(self, f"{side}_prompt_type") != "prefix":
                raise OFAError(f"{side}_prompt_type {getattr(self, f'{side}_prompt_type')!r} is not supported; "
                               "the original trains only 'prefix'")
            for name in (f"{side}_prompt_length", f"{side}_prompt_dim"):
                if getattr(self, name) < 0 or (name.endswith("length") and getattr(self, f"{side}_prompt")
                                               and getattr(self, name) == 0):
                    raise OFAError(f"config field {name} must be positive, got {getattr(self, name)}")
        if self.adapter_experts < 0 or self.adapter_experts == 1:
            raise OFAError(f"config field adapter_experts must be 0 (one adapter) or at least 2, got {self.adapter_experts}")
        if self.attn_adapter and not self.adapter:
            raise OFAError("config field attn_adapter needs adapter: true")
        if self.adapter and self.adapter_dim <= 0:
            raise OFAError(f"config field adapter_dim must be positive, got {self.adapter_dim}")

    # ---- derived values -------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.encoder_embed_dim

    @property
    def resnet_layers(self) -> tuple[int, int, int]:
        return RESNET_LAYERS[self.resnet_type]

    @property
    def bin_0(self) -> int:
        """Id of ``<bin_0>``: the location tokens are the last ``num_bins`` entries."""
        return self.vocab_size - self.num_bins

    @property
    def code_0(self) -> int:
        return self.vocab_size - self.num_bins - self.code_dict_size

    # ---- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OFAConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OFAError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**dict(data))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "OFAConfig":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise OFAError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(data)

    @classmethod
    def from_original(cls, args: Mapping[str, Any], base: "OFAConfig | None" = None) -> "OFAConfig":
        """Build from the original's ``cfg['model']`` (plus ``cfg['task']``) or ``vars(args)``.

        Fields the mapping does not mention keep the value of ``base`` (or the size named by
        the mapping's ``arch``/``_name``), exactly as the original's architecture functions
        fill in defaults.
        """
        if base is None:
            arch = args.get("arch") or args.get("_name")
            base = get_config(arch) if isinstance(arch, str) and arch in _ARCH_ALIASES else cls()
        values = base.to_dict()
        for f in fields(cls):
            if f.name in ("extra", "language", "text_vocab"):
                continue
            if f.name in args and args[f.name] is not None:
                values[f.name] = type(getattr(base, f.name))(args[f.name])
        for side in ("encoder", "decoder"):  # the original fills in its default, twice the width: 0 here
            if values[f"{side}_prompt_dim"] == 2 * values["encoder_embed_dim"]:
                values[f"{side}_prompt_dim"] = 0
        bpe = args.get("bpe")
        if bpe == "bert" or "BERT_CN" in str(args.get("bpe_dir", "")):
            values["language"] = "zh"
        return cls(**values)


def _size(layers: tuple[int, int], dim: int, heads: int, ffn: int, resnet: str, **kw: Any) -> OFAConfig:
    return OFAConfig(
        encoder_layers=layers[0],
        decoder_layers=layers[1],
        encoder_embed_dim=dim,
        decoder_embed_dim=dim,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_embed_dim=ffn,
        decoder_ffn_embed_dim=ffn,
        resnet_type=resnet,
        **kw,
    )


# The project's own small model reads only the words of its scenes (text/vocab/BPE/dict.scenes.txt)
# and places boxes on a coarser grid of location tokens.
MINI_BINS = 64
MINI_DRAW_CODES = 512  # the drawing model's VQ tokenizer (openofa.mini.vq)


def _subset_vocab_size(language: str, name: str, num_bins: int, code_dict_size: int) -> int:
    """4 specials + the subset's text symbols + <mask> + codes + bins (the cached dictionary's size)."""
    from openofa.text.dictionary import configured_dictionary

    return len(configured_dictionary(language, name, num_bins, code_dict_size))


# Chinese models share the architecture but use the BERT vocabulary:
# 4 specials + 21128 wordpieces + <mask> + 8192 codes + 1000 bins = 30325.
ZH_VOCAB_SIZE = 30325

_REGISTRY = {
    "tiny": lambda: _size((4, 4), 256, 4, 1024, "resnet50"),
    "medium": lambda: _size((4, 4), 512, 8, 2048, "resnet101"),
    "base": lambda: _size((6, 6), 768, 12, 3072, "resnet101"),
    "large": lambda: _size((12, 12), 1024, 16, 4096, "resnet152"),
    "huge": lambda: _size((24, 12), 1280, 16, 5120, "resnet152"),
    # the project's own small model (trained on procedural scenes, shipped inside the package)
    "mini": lambda: _size((3, 3), 96, 4, 384, "resnet-small", resnet_width=32, max_source_positions=128,
                          max_target_positions=64, image_bucket_size=16, text_vocab="scenes",
                          entangle_position_embedding=True, location_embedding_init="fourier",
                          num_bins=MINI_BINS, code_dict_size=0,
                          vocab_size=_subset_vocab_size("en", "scenes", MINI_BINS, 0)),
    # the project's own drawing model: text in, 8x8 codes of its small VQ tokenizer out (openofa.mini.draw)
    "mini-draw": lambda: _size((3, 3), 128, 4, 512, "resnet-small", resnet_width=32, max_source_positions=128,
                               max_target_positions=96, image_bucket_size=16, text_vocab="scenes_draw",
                               entangle_position_embedding=True, location_embedding_init="fourier",
                               num_bins=MINI_BINS, code_dict_size=MINI_DRAW_CODES, code_image_size=64,
                               vocab_size=_subset_vocab_size("en", "scenes_draw", MINI_BINS, MINI_DRAW_CODES)),
    # the project's own reading model: images of a word or number in, its characters out (openofa.mini.read)
    "mini-read": lambda: _size((3, 3), 128, 4, 512, "resnet-small", resnet_width=32, max_source_positions=128,
                               max_target_positions=64, image_bucket_size=16, language="zh", text_vocab="read",
                               entangle_position_embedding=True, location_embedding_init="fourier",
                               num_bins=MINI_BINS, code_dict_size=0,
                               vocab_size=_subset_vocab_size("zh", "read", MINI_BINS, 0)),
    "base-zh": lambda: _size((6, 6), 768, 12, 3072, "resnet101", vocab_size=ZH_VOCAB_SIZE, language="zh"),
    "large-zh": lambda: _size((12, 12), 1024, 16, 4096, "resnet152", vocab_size=ZH_VOCAB_SIZE, language="zh"),
}
# names the original uses for the same sizes (``--arch ofa_base``)
_ARCH_ALIASES = {**{k: k for k in _REGISTRY}, **{f"ofa_{k}": k for k in ("tiny", "medium", "base", "large", "huge")}}


def list_sizes() -> list[str]:
    return list(_REGISTRY)


def get_config(name: str, **overrides: Any) -> OFAConfig:
    """The config of a named size (``tiny``... ``huge``, ``base-zh``, ``large-zh``; ``ofa_base`` works too)."""
    key = _ARCH_ALIASES.get(name)
    if key is None:
        raise OFAError(f"unknown model size {name!r}; known sizes: {', '.join(_REGISTRY)}")
    cfg = _REGISTRY[key]()
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
