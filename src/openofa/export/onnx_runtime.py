"""Run an exported folder (:mod:`openofa.export.onnx`) with onnxruntime under our generator.

:class:`OnnxModel` has the methods :class:`~openofa.generation.SequenceGenerator` calls on a model
(``config``, ``encode``, ``init_cache``, ``decode_step``) and its cache has ``reorder`` and
``expand``, so beam search, sampling, constraints and prefixes run unchanged on the graphs.
``load_onnx(folder)`` wraps it in an :class:`~openofa.OFA`: ``load_onnx(folder).caption(image)``.

What the graphs do not cover raises :class:`~openofa.errors.OFAError`: inputs without an image,
images of another size than the exported one, image-code targets and decoder features (candidate
scoring runs on the logits: ``decode`` steps through the candidates with the step graph).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from openofa.config import OFAConfig
from openofa.errors import OFAError
from openofa.export.onnx import FORMAT, MANIFEST, VERSION


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise OFAError(f"{folder}: no {MANIFEST} (not a folder written by `ofa export onnx`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise OFAError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise OFAError(f"{path}: not an {FORMAT} version {VERSION} manifest")
    return manifest


@dataclass
class OnnxEncoderOutput:
    """The encoder graph's outputs as numpy arrays (B rows)."""

    hidden: np.ndarray  # (B, S, C)
    padding_mask: np.ndarray  # (B, S) bool
    cross_pos_k: np.ndarray  # (B, H, S, d)
    cross_kv: list[np.ndarray]  # per decoder layer its keys then values (B, H, S, d)

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    def index_select(self, index) -> "OnnxEncoderOutput":
        index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        return OnnxEncoderOutput(self.hidden[index], self.padding_mask[index], self.cross_pos_k[index],
                                 [a[index] for a in self.cross_kv])


class OnnxCache:
    """Decoding state of N = B * group rows: the self-attention keys/values of the steps so far
    (the step graph's ``present_*`` outputs) and the encoder's arrays of the B inputs."""

    def __init__(self, enc: OnnxEncoderOutput, group: int, num_heads: int, head_dim: int) -> None:
        self.enc = enc
        self.group = group
        rows = enc.batch_size * group
        empty = np.zeros((rows, num_heads, 0, head_dim), dtype=np.float32)
        self.past = [empty] * len(enc.cross_kv)
        self.step = 0

    @property
    def num_rows(self) -> int:
        return self.enc.batch_size * self.group

    def expand(self, n: int) -> None:
        """Each row becomes ``n`` identical rows (see ``DecoderCache.expand``)."""
        if self.group != 1:
            raise ValueError(f"expand needs one row per input, the cache has groups of {self.group}")
        rows = np.repeat(np.arange(self.num_rows), n)
        self.past = [a[rows] for a in self.past]
        self.group = n

    def reorder(self, new_order: torch.Tensor) -> None:
        """Row i of the new state is old row ``new_order[i]``; rows stay grouped by input."""
        order = new_order.cpu().numpy()
        self.past = [a[order] for a in self.past]
        inputs = order.reshape(-1, self.group)[:, 0] // self.group
        if len(inputs) != self.enc.batch_size or not np.array_equal(inputs, np.arange(len(inputs))):
            self.enc = self.enc.index_select(inputs)


class OnnxModel:
    """The exported graphs in onnxruntime sessions, with the model interface the generator uses.
    ``threads``: onnxruntime's intra-op threads (default: torch's thread count)."""

    def __init__(self, folder: str | Path, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise OFAError("running ONNX graphs needs onnxruntime: pip install 'openofa[onnx]'") from None
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        m = self.manifest
        self.config = OFAConfig.from_dict(m["config"])
        self.image_size = tuple(m["image_size"])
        self.num_heads, self.head_dim, self.num_layers = m["num_heads"], m["head_dim"], m["num_layers"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning: a decoding step is short and the thread pool's
        # spinning between steps takes the cores from the generator (3x slower on a busy 2-core machine)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {}
        for name, graph in m["graphs"].items():
            path = self.folder / graph["file"]
            if not path.is_file():
                raise OFAError(f"{self.folder}: {graph['file']} is missing")
            self.sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._step_inputs = m["graphs"]["decoder_step"]["inputs"]

    # ---- what OFA and the generator read --------------------------------------------------------
    device = torch.device("cpu")
    dtype = torch.float32
    encoder_dtype = torch.float32

    @property
    def max_image_size(self) -> int:
        return max(self.image_size)

    def eval(self) -> "OnnxModel":
        return self

    def parameters(self):
        """One empty meta tensor of the exported model's parameter count (``OFA.describe`` counts
        the parameters); the weights themselves live in the graphs."""
        return iter([torch.empty(int(self.manifest.get("parameters", 0)), device="meta")])

    # ---- encoding and decoding --------------------------------------------------------------------
    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None,
               patch_images: torch.Tensor | None = None, patch_masks: torch.Tensor | None = None) -> OnnxEncoderOutput:
        if patch_images is None:
            raise OFAError("the ONNX graphs take inputs with an image (text-only tasks are not exported)")
        if tuple(patch_images.shape[-2:]) != self.image_size:
            raise OFAError(f"the ONNX image encoder takes {self.image_size[1]}x{self.image_size[0]} images, "
                           f"got {patch_images.shape[-1]}x{patch_images.shape[-2]}")
        if src_tokens.shape[1] > self.config.max_source_positions:
            raise OFAError(f"source has {src_tokens.shape[1]} tokens; the model takes at most "
                           f"{self.config.max_source_positions}")
        if patch_masks is None:
            patch_masks = torch.ones(src_tokens.shape[0], dtype=torch.bool)
        images = patch_images.detach().to("cpu", torch.float32).numpy()
        (embeds,) = self.sessions["image_encoder"].run(None, {"patch_images": images})
        outs = self.sessions["encoder"].run(None, {
            "src_tokens": src_tokens.detach().cpu().long().numpy(),
            "image_embeds": embeds,
            "patch_masks": patch_masks.detach().cpu().bool().numpy(),
        })
        return OnnxEncoderOutput(outs[0], outs[1], outs[2], list(outs[3:]))

    def init_cache(self, enc: OnnxEncoderOutput, beam_size: int = 1, code_masks: torch.Tensor | None = None) -> OnnxCache:
        if code_masks is not None and bool(torch.as_tensor(code_masks).any()):
            raise OFAError("the ONNX decoder step decodes text; image-code targets are not exported")
        return OnnxCache(enc, beam_size, self.num_heads, self.head_dim)

    def decode_step(self, tokens: torch.Tensor, cache: OnnxCache, features_only: bool = False) -> torch.Tensor:
        """Next-token logits (N, V) float32 for the prefixes ``tokens`` (N, t+1)."""
        if features_only:
            raise OFAError("the ONNX decoder step returns logits only, not the decoder's features")
        t = tokens.shape[1] - 1
        if t != cache.step:
            raise ValueError(f"decoder cache is at step {cache.step} but got a prefix of length {t + 1}")
        enc = cache.enc
        feed = {"token": tokens[:, -1:].detach().cpu().long().numpy(), "step": np.array([t], dtype=np.int64),
                "padding_mask": enc.padding_mask, "cross_pos_k": enc.cross_pos_k}
        names = self._step_inputs[4:]
        for name, array in zip(names, [*cache.past, *enc.cross_kv]):
            feed[name] = array
        outs = self.sessions["decoder_step"].run(None, feed)
        cache.past = outs[1:]
        cache.step += 1
        return torch.from_numpy(outs[0])

    def decode(self, prev_output_tokens: torch.Tensor, enc: OnnxEncoderOutput, code_masks: torch.Tensor | None = None,
               cross_attention_layer: int | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V), one step at a time (candidate scoring calls it). Rows are
        right-padded, so a position's logits never see the pads after it, as with PyTorch's mask."""
        if cross_attention_layer is not None:
            raise OFAError("the ONNX graphs do not return attention weights")
        cache = self.init_cache(enc, 1, code_masks)
        steps = [self.decode_step(prev_output_tokens[:, : t + 1], cache) for t in range(prev_output_tokens.shape[1])]
        return torch.stack(steps, dim=1)


def load_onnx(folder: str | Path, *, threads: int | None = None, batch_size: int = 8, any_task: bool = False):
    """An :class:`~openofa.OFA` whose tasks run on the exported graphs in ``folder``."""
    from openofa.api import OFA

    model = OnnxModel(folder, threads=threads)
    return OFA(model, image_size=model.image_size[0], task_settings=model.manifest.get("task_settings") or {},
               batch_size=batch_size, any_task=any_task, source=str(folder))
