"""The OFA encoder-decoder. Task-agnostic: encode once, decode teacher-forced or step by step."""

from __future__ import annotations

import contextlib
import threading

import math

import torch
from torch import nn

from openofa.config import OFAConfig
from openofa.errors import OFAError
from openofa.model.decoder import Decoder, DecoderCache
from openofa.model.encoder import Encoder, EncoderOutput
from openofa.model.linear import Linear, packed_is_faster


class OFAModel(nn.Module):
    def __init__(self, config: OFAConfig) -> None:
        super().__init__()
        self.config = config
        embed = nn.Embedding(config.vocab_size, config.encoder_embed_dim, padding_idx=config.pad)
        self.encoder = Encoder(config, embed)
        self.decoder = Decoder(config, embed)

    @property
    def device(self) -> torch.device:
        return self.decoder.embed_positions.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The decoder's dtype (logits and generation run in it)."""
        return self.decoder.embed_positions.weight.dtype

    @property
    def max_image_size(self) -> int:
        """The largest image side the image position table covers (the trunk's stride is 16)."""
        return self.config.image_bucket_size * 16

    @property
    def encoder_dtype(self) -> torch.dtype:
        return self.encoder.embed_positions.weight.dtype

    def fold_batchnorm(self) -> "OFAModel":
        """Inference only: fold the image trunk's BatchNorms into its convolutions (see
        :meth:`ResNetTrunk.fold_batchnorm`); the trunk's state dict then leaves the official layout."""
        trunk = getattr(self.encoder, "embed_images", None)
        if trunk is not None:
            trunk.fold_batchnorm()
        return self

    def prepack(self, min_fp32_size: int = 1 << 20, probe: bool = True) -> int:
        """Inference on CPU: pre-pack the decoder's weights for oneDNN (see
        :mod:`openofa.model.linear`), the ones read at every generated token. bf16 weights are
        all packed; float32 ones from ``min_fp32_size`` elements up (the output projection, base's
        FFN and larger), and smaller ones where :func:`~openofa.model.linear.packed_is_faster`
        measures the packed product faster on this CPU (``probe``; once per shape and process).
        Call it after :meth:`set_precision` and ``.to()``: a weight changed after packing falls
        back to the plain product. Returns how many weights were packed."""
        packed = 0
        for m in self.decoder.modules():
            if isinstance(m, Linear):
                w = m.weight
                if (w.dtype == torch.bfloat16 or w.numel() >= min_fp32_size
                        or (probe and w.device.type == "cpu" and w.dtype == torch.float32
                            and packed_is_faster(*w.shape))):
                    packed += m.prepack()
                else:
                    m.unpack()
        return packed

    @torch.no_grad()
    def set_precision(self, encoder: torch.dtype = torch.float32, decoder: torch.dtype = torch.float32) -> "OFAModel":
        """Inference precision per half. The image trunk and encoder hold most of the arithmetic
        and tolerate bf16 well; the decoder decides near-ties between tokens, so keeping it in
        float32 gives the same tokens as a full float32 run while most of the bf16 speed-up stays.
        With different dtypes the shared token embedding is copied (the model is then for
        inference only)."""
        if encoder != decoder:
            shared = self.encoder.embed_tokens.weight
            own = nn.Embedding(shared.shape[0], shared.shape[1], padding_idx=self.config.pad,
                               device=shared.device, dtype=encoder)
            own.weight.copy_(shared)
            own.weight.requires_grad_(False)
            self.encoder.embed_tokens = own
        self.encoder.to(encoder)
        self.decoder.to(decoder)
        return self

    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None,
               patch_images: torch.Tensor | None = None, patch_masks: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a batch: ``src_tokens`` (B, L) right-padded with ``pad``; optional images (B, 3, H, W)
        with ``patch_masks`` (B,) telling which rows really have an image. ``src_lengths`` is
        accepted for the original's batch layout; padding is read from the tokens."""
        if src_tokens.shape[1] > self.config.max_source_positions:
            raise OFAError(f"source has {src_tokens.shape[1]} tokens; the model takes at most "
                           f"{self.config.max_source_positions}")
        if patch_images is not None:
            side = max(patch_images.shape[-2:])
            if side > self.max_image_size:
                raise OFAError(f"images of {patch_images.shape[-1]}x{patch_images.shape[-2]} pixels: the "
                               f"model's image positions cover at most {self.max_image_size} pixels a side")
            patch_images = patch_images.to(self.encoder_dtype)
        enc = self.encoder(src_tokens, patch_images, patch_masks)
        if self.encoder_dtype != self.dtype:
            enc = EncoderOutput(enc.hidden.to(self.dtype), enc.padding_mask, enc.pos_embed.to(self.dtype),
                                enc.image_grid)
        return enc

    def decode(self, prev_output_tokens: torch.Tensor, enc: EncoderOutput,
               code_masks: torch.Tensor | None = None, cross_attention_layer: int | None = None):
        """Teacher-forced logits (B, T, V) for ``prev_output_tokens`` (B, T) (bos first);
        ``code_masks`` (B,) bool flags the rows whose target is image codes. With
        ``cross_attention_layer``: ``(logits, CrossAttention)`` of that decoder layer."""
        return self.decoder(prev_output_tokens, enc, code_masks=code_masks,
                            cross_attention_layer=cross_attention_layer)

    def output_logits(self, features: torch.Tensor, vocab: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Logits of decoder ``features`` over the vocabulary, or over the token ids ``vocab`` only."""
        return self.decoder.output_logits(features, vocab)

    def init_cache(self, enc: EncoderOutput, beam_size: int = 1,
                   code_masks: torch.Tensor | None = None) -> DecoderCache:
        """Cache for ``enc.batch_size * beam_size`` decoder rows; row r decodes input r // beam_size.
        ``code_masks`` (B,): the inputs whose rows decode image codes."""
        return self.decoder.init_cache(enc, beam_size, code_masks)

    def decode_step(self, tokens: torch.Tensor, cache: DecoderCache, features_only: bool = False) -> torch.Tensor:
        """Next-token logits (N, V) in float32 given the whole prefix ``tokens`` (N, t+1); with
        ``features_only`` the normalised decoder output (N, C) in the decoder's dtype instead."""
        out = self.decoder.step(tokens, cache, features_only)
        return out if features_only else out.float()

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None,
                patch_images: torch.Tensor | None = None, patch_masks: torch.Tensor | None = None,
                prev_output_tokens: torch.Tensor | None = None,
                code_masks: torch.Tensor | None = None, cross_attention_layer: int | None = None):
        """The original's batch fields in, batch-first logits (B, T, V) out; with
        ``cross_attention_layer``, ``(logits, CrossAttention)`` (see :meth:`decode`)."""
        if prev_output_tokens is None:
            raise TypeError("prev_output_tokens is required")
        enc = self.encode(src_tokens, src_lengths, patch_images, patch_masks)
        return self.decode(prev_output_tokens, enc, code_masks, cross_attention_layer)


_INIT_NAMES = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
               "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")
_SKIP_INIT = threading.local()
_INIT_LOCK = threading.Lock()


def _install_init_switch() -> None:
    """Wrap ``torch.nn.init``'s initialisers once so that a thread inside :func:`_no_init` skips
    them; every other thread (and this one outside it) runs them as before."""
    with _INIT_LOCK:
        if getattr(nn.init, "_openofa_switch", False):
            return
        for name in _INIT_NAMES:
            original = getattr(nn.init, name, None)
            if original is None:
                continue

            def switched(tensor, *args, _original=original, **kwargs):
                if getattr(_SKIP_INIT, "on", False):
                    return tensor
                return _original(tensor, *args, **kwargs)

            switched.__wrapped__ = original
            setattr(nn.init, name, switched)
        nn.init._openofa_switch = True


@contextlib.contextmanager
def _no_init():
    """In this thread, ``torch.nn.init``'s initialisers do nothing while modules are built on the
    meta device: their weights are replaced by the checkpoint's anyway, and a random initialiser
    on the meta device runs through torch's Python reference kernels, whose first use imports
    ``torch._dynamo`` (about a second before a one-image command does any work). Other threads
    building or initialising models meanwhile are not affected."""
    _install_init_switch()
    before = getattr(_SKIP_INIT, "on", False)
    _SKIP_INIT.on = True
    try:
        yield
    finally:
        _SKIP_INIT.on = before


def model_from_state_dict(config: OFAConfig, state_dict: dict[str, torch.Tensor], *,
                          source: str = "checkpoint") -> OFAModel:
    """An OFA model holding ``state_dict``'s weights (floating ones as float32), loaded strictly.

    The modules are built on the meta device and take the given tensors as they are, so no
    random initialisation runs for weights the checkpoint replaces and no second copy of the
    weights is made (base loads ~2x faster). ``source`` names the weights in errors."""
    with torch.device("meta"), _no_init():
        model = OFAModel(config)
    weights = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise OFAError(f"{source}: weights do not fit the model built from its config ({detail})") from None
    # assigning replaces parameters one name at a time: tie the output projection again
    model.decoder.output_projection.weight = model.decoder.embed_tokens.weight
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise OFAError(f"{source}: no weights for {', '.join(left[:5])}")
    return model


def build_model(config: OFAConfig) -> OFAModel:
    """An OFA model with freshly initialised weights (load a checkpoint into it for real use)."""
    model = OFAModel(config)
    init_weights(model)
    return model


@torch.no_grad()
def init_weights(model: OFAModel) -> None:
    """Initialisation used for training from scratch (BERT-style normal(0, 0.02) linears/embeddings,
    zero relative-position tables, unit LayerNorms, Kaiming convolutions)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            if "rel_pos_table" in name:
                nn.init.zeros_(m.weight)
            else:
                nn.init.normal_(m.weight, std=m.embedding_dim ** -0.5)
                if m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    cfg = model.config
    if cfg.location_embedding_init == "fourier" and cfg.num_bins:
        table = model.encoder.embed_tokens.weight
        table[cfg.bin_0:cfg.bin_0 + cfg.num_bins] = fourier_rows(cfg.num_bins, table.shape[1]).to(table.dtype)
    elif cfg.location_embedding_init != "normal":
        raise OFAError(f"location_embedding_init must be normal or fourier, got {cfg.location_embedding_init!r}")


def fourier_rows(n: int, dim: int) -> torch.Tensor:
    """(n, dim) rows ``[cos(2 pi k / P_j), sin(2 pi k / P_j)]`` for k < n, periods P_j geometric
    from 2n down to 3, scaled to norm 1 (the norm of a normal(0, dim^-0.5) row): the dot product
    of two rows falls off smoothly with the distance between their k."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    periods = torch.logspace(math.log10(2 * n), math.log10(3.0), dim // 2, dtype=torch.float64)[None]
    rows = torch.zeros(n, dim, dtype=torch.float64)
    rows[:, : dim // 2] = torch.cos(2 * math.pi * k / periods)
    rows[:, dim // 2 : 2 * (dim // 2)] = torch.sin(2 * math.pi * k / periods)
    return (rows / math.sqrt(dim // 2)).float()
