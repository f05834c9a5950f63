"""The image trunk in static int8, for CPU inference.

The ResNet trunk holds most of the arithmetic of a batch (at tiny, batch 8, 384 px: 154 GFLOP of
convolutions against about 40 for the transformer), and int8 convolutions (oneDNN with the CPU's
int8 dot-product instructions) run about twice as fast as bf16 ones and four times float32.
:func:`quantize_trunk` turns a folded :class:`~openofa.model.resnet.ResNetTrunk` into an
:class:`Int8Trunk`:

* weights: int8, symmetric, one scale per output channel (from the folded float32 weights);
* activations: uint8 between layers, each with a fixed scale measured once on calibration images
  (their largest value; the trunk's input and the downsample branches, which can be negative,
  get a zero point) — static quantisation, so no layer pays for measuring its input;
* each convolution runs with its ReLU, and a block's last one with the shortcut's addition and
  ReLU, as one ``onednn::qconv2d_pointwise`` call writing uint8 for the next layer; the last block's
  output is dequantised into the images' dtype (the encoder's).

Its features differ from float32 by about 3% (relative L2 norm on tiny's recipe weights; bf16's
differ by 0.7%), so the mode is judged by quality like every reduced precision
(docs/benchmarks.md, "Reduced precision"). The scales are the calibration images' ranges: inputs
much brighter or more contrasted than those saturate. Calibrate on images like the ones you will
run (``OFA.load(dtype="int8-trunk", calibration=[...])``); the default is a fixed set of the
project's scenes (:func:`default_calibration`).

CPUs without VNNI (the int8 dot-product instruction) get 7-bit activations: their int8 products
go through 16-bit sums that would saturate with the full 8 bits.

Written here rather than with ``torch.ao.quantization``'s eager modules (deprecated in PyTorch
2.13, and without the fused shortcut) or PT2E (which needs ``torch.compile``): the oneDNN
operators it uses are the ones PT2E's x86 lowering calls.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from openofa.errors import OFAError
from openofa.model.resnet import ResNetTrunk


def int8_trunk_available() -> bool:
    """Whether this PyTorch build has oneDNN's quantized convolution operators."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops, "onednn")
            and hasattr(torch.ops.onednn, "qconv2d_pointwise") and hasattr(torch.ops.onednn, "qconv_prepack"))


@functools.lru_cache(maxsize=1)
def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def activation_max() -> int:
    """The largest uint8 activation code used: 255 with VNNI, else 127 (see the module docstring)."""
    return 255 if _has_vnni() else 127


class _QConv:
    """One convolution of the int8 trunk: int8 weight (packed at the first call), float32 bias,
    and the scale and zero point of its input and of its output."""

    def __init__(self, conv: nn.Conv2d, x_scale: float, x_zp: int, y_scale: float, y_zp: int) -> None:
        w = conv.weight.detach().float()
        w_scale = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127.0
        qw = torch.round(w / w_scale.view(-1, 1, 1, 1)).clamp_(-127, 127).to(torch.int8)
        self.args = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        self.qw = qw.contiguous(memory_format=torch.channels_last)
        self.weight = None
        self.w_scale, self.w_zp = w_scale, torch.zeros(w.shape[0], dtype=torch.long)
        self.bias = None if conv.bias is None else conv.bias.detach().float().clone()
        self.x_scale, self.x_zp, self.y_scale, self.y_zp = x_scale, x_zp, y_scale, y_zp

    def pack(self, q: torch.Tensor) -> None:
        """Pack the int8 weight for oneDNN at the first call, for that input's shape (packed for an
        unknown shape, some block convolutions ran ~2x slower); the plain int8 copy goes then."""
        if self.weight is None:
            self.weight = torch.ops.onednn.qconv_prepack(self.qw, self.w_scale, self.x_scale, self.x_zp,
                                                         *self.args, list(q.shape))
            self.qw = None

    def __call__(self, q: torch.Tensor, unary: str = "none") -> torch.Tensor:
        self.pack(q)
        return torch.ops.onednn.qconv2d_pointwise(q, self.x_scale, self.x_zp, self.weight, self.w_scale, self.w_zp,
                                                  self.bias, *self.args, self.y_scale, self.y_zp, None, unary, [], None)

    def add_relu(self, q: torch.Tensor, shortcut: torch.Tensor, s_scale: float, s_zp: int) -> torch.Tensor:
        """relu(conv(q) + shortcut), the shortcut uint8 with its own scale and zero point (its
        buffer is overwritten with the result)."""
        self.pack(q)
        return torch.ops.onednn.qconv2d_pointwise.binary(
            q, self.x_scale, self.x_zp, self.weight, self.w_scale, self.w_zp, shortcut, self.bias, *self.args,
            self.y_scale, self.y_zp, None, s_scale, s_zp, "sum", 1.0, "relu", [], None)


def _unsigned(top: float, qmax: int) -> tuple[float, int]:
    return max(top, 1e-8) / qmax, 0


def _signed(lo: float, hi: float, qmax: int) -> tuple[float, int]:
    # symmetric about the middle code: oneDNN's int8 kernels run ~3x slower on the convolutions
    # that read or add such a tensor when its zero point is anything else
    zp = (qmax + 1) // 2
    return max(-lo, hi, 1e-8) / (qmax - zp), zp


class Int8Trunk(nn.Module):
    """A folded :class:`ResNetTrunk` with int8 weights and uint8 activations (see the module
    docstring); call it like the trunk: float images (B, 3, H, W) in, features (B, C, H/16, W/16)
    out in the images' dtype. Inference on CPU only; not copied, saved or exported."""

    def __init__(self, trunk: ResNetTrunk, ranges: dict) -> None:
        super().__init__()
        qmax = activation_max()
        self.out_channels = trunk.out_channels
        self.in_scale, self.in_zp = _signed(*ranges["input"], qmax)
        scale, zp = _unsigned(ranges["stem"], qmax)
        self.stem = _QConv(trunk.conv1, self.in_scale, self.in_zp, scale, zp)
        self.maxpool = trunk.maxpool
        self.blocks = []
        for i, block in enumerate(b for stage in (trunk.layer1, trunk.layer2, trunk.layer3) for b in stage):
            r = ranges["blocks"][i]
            a = _unsigned(r["conv1"], qmax)
            b = _unsigned(r["conv2"], qmax)
            out = _unsigned(r["out"], qmax)
            conv1 = _QConv(block.conv1, scale, zp, *a)
            conv2 = _QConv(block.conv2, *a, *b)
            down = None
            if block.downsample is not None:
                d = _signed(*r["down"], qmax)
                down = _QConv(block.downsample[0], scale, zp, *d)
            conv3 = _QConv(block.conv3, *b, *out)
            self.blocks.append((conv1, conv2, down, conv3))
            scale, zp = out
        self.out_scale, self.out_zp = scale, zp

    def extra_repr(self) -> str:
        return f"blocks={len(self.blocks)}, int8 weights, uint8 activations up to {activation_max()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise OFAError(f"the int8 trunk runs on CPU only; got images on {x.device}")
        with warnings.catch_warnings():  # quantized tensors are deprecated as a public type; the kernels are not
            warnings.simplefilter("ignore")
            q = torch.quantize_per_tensor(x.float().contiguous(), self.in_scale,
                                          self.in_zp, torch.quint8).int_repr()
            q = self.stem(q, "relu")
            pooled = F.max_pool2d(torch._make_per_tensor_quantized_tensor(q, self.stem.y_scale, self.stem.y_zp),
                                  self.maxpool.kernel_size, self.maxpool.stride, self.maxpool.padding)
            q = pooled.int_repr()
        for conv1, conv2, down, conv3 in self.blocks:
            h = conv2(conv1(q, "relu"), "relu")
            if down is None:
                shortcut, s_scale, s_zp = q.clone(), conv1.x_scale, conv1.x_zp
            else:
                shortcut, s_scale, s_zp = down(q), down.y_scale, down.y_zp
            q = conv3.add_relu(h, shortcut, s_scale, s_zp)
        return ((q.float() - self.out_zp) * self.out_scale).to(x.dtype)

    def __deepcopy__(self, memo):
        raise OFAError("an int8 trunk cannot be copied; quantize the model again")


@torch.no_grad()
def calibrate(trunk: ResNetTrunk, batches) -> dict:
    """The ranges :class:`Int8Trunk` quantises with: over ``batches`` (float image tensors), the
    input's smallest and largest value, and the largest output of every ReLU (stem, each block's
    first two convolutions and its output) and the smallest and largest of every downsample
    branch, computed in float32 by the folded trunk's own convolutions."""
    blocks = [b for stage in (trunk.layer1, trunk.layer2, trunk.layer3) for b in stage]
    ranges = {"input": [float("inf"), float("-inf")], "stem": 0.0,
              "blocks": [{"conv1": 0.0, "conv2": 0.0, "out": 0.0, "down": [float("inf"), float("-inf")]}
                         for _ in blocks]}

    def grow(pair, t):
        pair[0], pair[1] = min(pair[0], float(t.min())), max(pair[1], float(t.max()))

    for x in batches:
        x = x.float().contiguous(memory_format=torch.channels_last)
        grow(ranges["input"], x)
        y = F.relu(trunk.conv1(x))
        ranges["stem"] = max(ranges["stem"], float(y.max()))
        x = trunk.maxpool(y)
        for block, r in zip(blocks, ranges["blocks"]):
            a = F.relu(block.conv1(x))
            b = F.relu(block.conv2(a))
            shortcut = x if block.downsample is None else block.downsample(x)
            if block.downsample is not None:
                grow(r["down"], shortcut)
            x = F.relu(block.conv3(b) + shortcut)
            r["conv1"] = max(r["conv1"], float(a.max()))
            r["conv2"] = max(r["conv2"], float(b.max()))
            r["out"] = max(r["out"], float(x.max()))
    return ranges


def quantize_trunk(model, batches) -> Int8Trunk:
    """Replace ``model.encoder.embed_images`` (an :class:`~openofa.model.OFAModel` on CPU, its
    trunk's BatchNorms folded) by an :class:`Int8Trunk` calibrated on ``batches`` (float image
    tensors as the model receives them). Inference only. Returns the new trunk."""
    if not int8_trunk_available():
        raise OFAError("the int8 trunk needs oneDNN's quantized convolutions, which this PyTorch build lacks")
    trunk = getattr(model.encoder, "embed_images", None)
    if isinstance(trunk, Int8Trunk):
        return trunk
    if not isinstance(trunk, ResNetTrunk):
        raise OFAError("the int8 trunk needs a model with an image trunk")
    if model.device.type != "cpu":
        raise OFAError(f"the int8 trunk runs on CPU only; the model is on {model.device}")
    if not isinstance(trunk.bn1, nn.Identity):
        raise OFAError("the int8 trunk needs the trunk's BatchNorms folded (fold_batchnorm=True)")
    float_trunk = trunk.float()
    ranges = calibrate(float_trunk, batches)
    q = Int8Trunk(float_trunk, ranges)
    model.encoder.embed_images = q
    return q
