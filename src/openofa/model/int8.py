"""int8 dynamic quantisation of the linear layers, for CPU inference.

:func:`quantize_linears` replaces the :class:`~openofa.model.linear.Linear` layers of a module by
:class:`Int8Linear`: the weight is stored once as int8 with one scale per output row (symmetric,
per-channel), and each call quantises its input per tensor on the fly, multiplies in int8 with
int32 accumulation (fbgemm/oneDNN through PyTorch's ``quantized::linear_dynamic``) and returns
float32. Outputs differ from float32 by ~2% of their largest value per product, so int8 is judged
by quality (held-out scores, near-tie margins), not by identical tokens (docs/benchmarks.md,
"Reduced precision").

Left in float: layers that carry an unmerged LoRA update (refused: merge it first), and the output
projection over the vocabulary, which shares its weight with the token embedding and whose weight
candidate scoring reads by row; it is also the product that decides between near-tied tokens.

PyTorch 2.13 marks the eager ``torch.ao.quantization`` module API deprecated in favour of torchao;
this module uses only the underlying quantized operators (``quantized::linear_prepack`` and
``quantized::linear_dynamic``), which the CPU build ships, and wraps them in its own module.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from openofa.errors import OFAError
from openofa.model.linear import Linear


def int8_available() -> bool:
    """Whether this PyTorch build has the quantized CPU linear kernels."""
    return (hasattr(torch.ops, "quantized") and hasattr(torch.ops.quantized, "linear_dynamic")
            and any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm", "onednn")))


def _quantize_weight(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().float()
    scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127.0).double()
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors are deprecated as a public type; the kernels are not
        warnings.simplefilter("ignore")
        return torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)


class Int8Linear(nn.Module):
    """A linear layer with an int8 weight (per output row) and dynamically quantised input."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.weight.device.type != "cpu":
            raise OFAError("int8 linear layers run on CPU only")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._packed = torch.ops.quantized.linear_prepack(_quantize_weight(linear.weight), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float().contiguous()
        # reduce_range: 7-bit activations keep the x86 int8 dot products free of saturation
        y = torch.ops.quantized.linear_dynamic(x, self._packed, True)
        return y.reshape(*shape[:-1], self.out_features).to(dtype)

    def __deepcopy__(self, memo):
        raise OFAError("an int8 model cannot be copied; load it again with dtype='int8'")


def quantize_linears(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> int:
    """Replace every :class:`Linear` under ``module`` (except the modules in ``skip``) by
    :class:`Int8Linear`, in place; returns how many were replaced. Inference only."""
    if not int8_available():
        raise OFAError("int8 needs PyTorch's quantized CPU kernels (fbgemm/oneDNN), which this build lacks")
    targets = []
    for name, m in module.named_modules():
        if isinstance(m, Linear) and not any(m is s for s in skip):
            if m._modules.get("lora_A") is not None:
                raise OFAError("int8 needs LoRA updates merged into the weights (merge_adapter=True)")
            if m.weight.device.type != "cpu":
                raise OFAError(f"dtype int8 runs on CPU only; the model is on {m.weight.device}")
            targets.append(name)
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, Int8Linear(getattr(parent, attr)))
    return len(targets)


def quantize_model(model, encoder: bool = False, decoder: bool = True) -> int:
    """int8 linear layers for an :class:`~openofa.model.OFAModel` on CPU (inference only): the
    decoder's by default, the encoder's too with ``encoder=True``; the output projection over the
    vocabulary stays float. Measured on the bundled model (docs/benchmarks.md, "Reduced
    precision"): the decoder's int8 layers keep held-out VQA and CIDEr-D within 1 point, while the
    encoder's cost CIDEr-D 4 points. Returns how many layers were replaced."""
    if model.device.type != "cpu":
        raise OFAError(f"dtype int8 runs on CPU only; the model is on {model.device}")
    n = 0
    if encoder:
        n += quantize_linears(model.encoder)
    if decoder:
        n += quantize_linears(model.decoder, skip=(model.decoder.output_projection,))
    return n


@torch.no_grad()
def sequence_score(model, src_tokens: torch.Tensor, patch_images: torch.Tensor | None,
                   patch_masks: torch.Tensor | None, tokens: list[int], normalize: bool = True,
                   vocab: tuple[int, int] | None = None) -> float:
    """``model``'s log-probability of ``tokens`` (ending with eos) for one input (a batch of one),
    per token when ``normalize`` (beam search's length-normalised score); with ``vocab`` =
    [start, end) logits outside it (but the four special ids) are -inf before the softmax, as a
    constrained task generates them. Answer tries and banned repeats are not applied."""
    enc = model.encode(src_tokens, None, patch_images, patch_masks)
    prev = torch.tensor([[model.config.bos, *tokens[:-1]]], dtype=torch.long)
    lprobs = model.decode(prev, enc)[0].float()
    if vocab is not None:
        keep = torch.zeros(lprobs.shape[-1], dtype=torch.bool)
        keep[:4] = True  # bos, pad, eos, unk stay, as in generation.TokenRange
        keep[vocab[0]:vocab[1]] = True
        lprobs = lprobs.masked_fill(~keep, float("-inf"))
    lprobs = lprobs.log_softmax(-1)
    total = float(lprobs.gather(1, torch.tensor(tokens)[:, None]).sum())
    return total / len(tokens) if normalize else total


def tie_margin(model, src_tokens, patch_images, patch_masks, chosen: list[int], other: list[int],
               normalize: bool = True, vocab: tuple[int, int] | None = None) -> float:
    """How close ``model``'s own choice ``chosen`` was to ``other`` (another precision's choice)
    for one input: the difference of their scores under ``model``. A precision change that swaps
    two outputs whose float32 scores are this close only resolves a near-tie differently."""
    return (sequence_score(model, src_tokens, patch_images, patch_masks, chosen, normalize, vocab)
            - sequence_score(model, src_tokens, patch_images, patch_masks, other, normalize, vocab))
