"""``ofa export onnx [--model PATH] OUT_DIR``: write a model's ONNX graphs (see ``docs/onnx.md``).

The flags are declared without importing torch's exporter or onnx, so ``ofa --help`` works without
the ``onnx`` extra; running the command without it says what to install.
"""

from __future__ import annotations

import argparse
import importlib.util

from openofa.errors import OFAError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a model to another runtime (onnx)",
                       description="Export a model to another runtime. onnx: image encoder, encoder and a decoder "
                                   "step with KV cache as three ONNX graphs plus manifest.json, run by onnxruntime "
                                   "with openofa.export.load_onnx. Needs pip install openofa[onnx].")
    p.add_argument("format", choices=["onnx"])
    p.add_argument("out", help="folder for the graphs and manifest.json")
    p.add_argument("--model", "-m", help="official .pt, Hugging Face folder, or our folder "
                   "(default: the project's own small model)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--image-size", type=int,
                   help="side of the square images the image encoder takes (default: the caption task's)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    return p


def run(args: argparse.Namespace) -> int:
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise OFAError(f"ofa export onnx needs {' and '.join(missing)}: pip install 'openofa[onnx]'")
    from openofa.api import OFA
    from openofa.export.onnx import OPSET, export_onnx

    opset = OPSET if args.opset is None else args.opset
    if not 17 <= opset <= 21:
        raise OFAError(f"opset {opset}: the export uses LayerNormalization, opset 17 to 21")
    ofa = OFA.load(args.model, ema=args.ema, prepack=False)
    manifest = export_onnx(ofa, args.out, image_size=args.image_size, opset=opset)
    print(f"wrote {manifest.parent} (image_encoder.onnx, encoder.onnx, decoder_step.onnx, {manifest.name})")
    return 0
