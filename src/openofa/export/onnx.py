"""Export a loaded model to ONNX: three graphs and a manifest in one folder.

``export_onnx(ofa, out_dir)`` writes

* ``image_encoder.onnx``: ``patch_images (B, 3, H, W)`` -> ``image_embeds (B, P, C)``;
* ``encoder.onnx``: ``src_tokens (B, L)``, ``image_embeds``, ``patch_masks (B,)`` -> ``hidden``,
  ``padding_mask``, ``cross_pos_k`` and ``cross_k_<i>`` / ``cross_v_<i>`` per decoder layer;
* ``decoder_step.onnx``: ``token (N, 1)``, ``step (1,)``, ``padding_mask``, ``cross_pos_k``,
  ``past_k_<i>`` / ``past_v_<i>`` (N, H, step, d) and the cross keys/values -> ``logits (N, V)``
  and ``present_k_<i>`` / ``present_v_<i>`` (N, H, step + 1, d);
* ``manifest.json``: the model's config and task settings, the token ids, the image size, the
  opset and each graph's inputs, outputs and dynamic axes.

:mod:`openofa.export.onnx_runtime` runs the folder with onnxruntime under the project's generator.
The graphs come from the modules of :mod:`openofa.export.onnx_graphs` through the TorchScript
exporter. What is not exported (image-code targets, prefix tuning, inputs without an image) is
refused with an :class:`~openofa.errors.OFAError`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from openofa.errors import OFAError
from openofa.model.linear import Linear
from openofa.model.ofa import OFAModel

FORMAT = "openofa-onnx"
VERSION = 1
OPSET = 17
MANIFEST = "manifest.json"


def graph_names(num_layers: int) -> dict[str, dict[str, list[str]]]:
    """Input and output names of the three graphs of a decoder with ``num_layers`` layers."""
    cross = [f"cross_{kv}_{i}" for i in range(num_layers) for kv in ("k", "v")]
    past = [f"past_{kv}_{i}" for i in range(num_layers) for kv in ("k", "v")]
    present = [f"present_{kv}_{i}" for i in range(num_layers) for kv in ("k", "v")]
    return {
        "image_encoder": {"inputs": ["patch_images"], "outputs": ["image_embeds"]},
        "encoder": {"inputs": ["src_tokens", "image_embeds", "patch_masks"],
                    "outputs": ["hidden", "padding_mask", "cross_pos_k", *cross]},
        "decoder_step": {"inputs": ["token", "step", "padding_mask", "cross_pos_k", *past, *cross],
                         "outputs": ["logits", *present]},
    }


def _dynamic_axes(names: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, dict[int, str]]]:
    b, n, s, L, t = "batch", "rows", "source", "tokens", "past"
    enc_out = {"hidden": {0: b, 1: s}, "padding_mask": {0: b, 1: s}, "cross_pos_k": {0: b, 2: s}}
    for name in names["encoder"]["outputs"][3:]:
        enc_out[name] = {0: b, 2: s}
    step = {"token": {0: n}, "padding_mask": {0: b, 1: s}, "cross_pos_k": {0: b, 2: s}, "logits": {0: n}}
    for name in names["decoder_step"]["inputs"][4:]:
        step[name] = {0: n, 2: t} if name.startswith("past") else {0: b, 2: s}
    for name in names["decoder_step"]["outputs"][1:]:
        step[name] = {0: n, 2: "present"}
    return {
        "image_encoder": {"patch_images": {0: b}, "image_embeds": {0: b}},
        "encoder": {"src_tokens": {0: b, 1: L}, "image_embeds": {0: b}, "patch_masks": {0: b}, **enc_out},
        "decoder_step": step,
    }


def _check_exportable(model: OFAModel) -> None:
    cfg = model.config
    if cfg.encoder_prompt or cfg.decoder_prompt:
        raise OFAError("ONNX export: prefix tuning (encoder/decoder prompts) is not exported; merge or drop it first")
    if model.device.type != "cpu":
        raise OFAError(f"ONNX export runs on the CPU; the model is on {model.device}")
    from openofa.model.int8 import Int8Linear
    from openofa.model.int8_trunk import Int8Trunk

    quantized = any(isinstance(m, (Int8Linear, Int8Trunk)) for m in model.modules())
    if quantized or model.dtype != torch.float32 or model.encoder_dtype != torch.float32:
        raise OFAError("ONNX export needs a float32 model (load it with the default dtype)")


def export_onnx(ofa, out_dir: str | Path, *, image_size: int | None = None, opset: int = OPSET) -> Path:
    """Write the three graphs and ``manifest.json`` of ``ofa`` (an :class:`~openofa.OFA` or an
    :class:`OFAModel`) to ``out_dir``; return the manifest's path. ``image_size``: the side of the
    square images the image encoder takes (default: the caption task's size for an ``OFA``, else
    the config's ``patch_image_size``)."""
    from openofa.export.onnx_graphs import DecoderStepGraph, EncoderGraph, ImageEncoderGraph

    model = ofa.model if hasattr(ofa, "model") else ofa
    if not isinstance(model, OFAModel):
        raise OFAError(f"ONNX export takes an OFA or OFAModel, not {type(model).__name__}")
    _check_exportable(model)
    cfg = model.config
    settings = dict(getattr(ofa, "task_settings", None) or cfg.extra.get("task", {}))
    if image_size is None:
        image_size = ofa.task_image_size(ofa.task("caption")) if hasattr(ofa, "task_image_size") \
            else int(settings.get("patch_image_size", 480))
    if not 16 <= image_size <= model.max_image_size or image_size % 16:
        raise OFAError(f"image size {image_size}: the export takes a multiple of 16 from 16 to "
                       f"{model.max_image_size} pixels a side")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = graph_names(len(model.decoder.layers))
    axes = _dynamic_axes(names)

    # packed weights go through a oneDNN op the exporter does not know: trace the plain product
    packed = [m for m in model.modules() if isinstance(m, Linear) and m.is_packed]
    for m in packed:
        m.unpack()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            images = torch.randn(2, 3, image_size, image_size)
            image_graph = ImageEncoderGraph(model)
            embeds = image_graph(images)
            grid = (image_size // 16, image_size // 16)
            if embeds.shape[1] != grid[0] * grid[1]:
                raise OFAError(f"image size {image_size} gives {embeds.shape[1]} patches, not a {grid} grid")
            src = torch.tensor([[cfg.bos, 5, 6, 7, cfg.eos], [cfg.bos, 8, cfg.eos, cfg.pad, cfg.pad]])
            masks = torch.tensor([True, True])
            encoder_graph = EncoderGraph(model, grid)
            enc_out = encoder_graph(src, embeds, masks)
            step_graph = DecoderStepGraph(model)
            heads = model.decoder.num_heads
            d = cfg.decoder_embed_dim // heads
            group, past_len = 2, 3
            rows = src.shape[0] * group
            past = [torch.randn(rows, heads, past_len, d) for _ in names["decoder_step"]["outputs"][1:]]
            step_args = (torch.full((rows, 1), 5), torch.tensor([past_len]), enc_out[1], enc_out[2], *past,
                         *enc_out[3:])
            jobs = [("image_encoder", image_graph, (images,)), ("encoder", encoder_graph, (src, embeds, masks)),
                    ("decoder_step", step_graph, step_args)]
            files = {}
            for name, module, args in jobs:
                path = out / f"{name}.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
                    torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                                      input_names=names[name]["inputs"], output_names=names[name]["outputs"],
                                      dynamic_axes=axes[name], do_constant_folding=True)
                files[name] = path.name
    finally:
        model.train(was_training)
        for m in packed:
            m.prepack()

    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "opset": opset,
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_size": [image_size, image_size],
        "grid": list(grid),
        "num_layers": len(model.decoder.layers),
        "num_heads": heads,
        "head_dim": d,
        "tokens": {"pad": cfg.pad, "bos": cfg.bos, "eos": cfg.eos, "unk": cfg.unk, "vocab_size": cfg.vocab_size},
        "config": cfg.to_dict(),
        "task_settings": settings,
        "graphs": {name: {"file": files[name], **names[name],
                          "dynamic_axes": {k: {str(a): v for a, v in ax.items()} for k, ax in axes[name].items()}}
                   for name in names},
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return path
