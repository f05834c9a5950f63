"""Text-to-image (the original's ``image_gen``): prompt ``" what is the complete image? caption:
{caption}"`` (the caption's first 64 words, no lower-casing), and the model samples a grid of
VQGAN codes (32x32 at 256 px) that the VQGAN decodes to pixels.

Decoding as the original's ``ImageGenTask``: always sampling, ``samples`` images per text (the
original's ``beam``) from one encoder pass and one KV cache, top-k 256, temperature 1, exactly
``grid * grid`` codes then eos (``constraint_range`` = the code ids; the special ids 0..3 are
masked after the log-softmax, ``gen_code``), with a seed (0 unless given; the original seeds
the global generator). ``rerank`` orders the images by CLIP similarity to the caption
(``ti_sim``: cosine of the normalised embeddings), as the original's evaluation does; the
evaluation metric is the best image's CLIP score.

The VQGAN (``vqgan``) and CLIP (``clip``) weights are separate files: a path, or found beside
the model (``vqgan/`` or ``last.ckpt`` + ``model.yaml``; ``clip/ViT-B-16.pt`` or
``ViT-B-16.*``), or set once as ``ofa.components["vqgan"]`` / ``["clip"]``.

Data files: the original's ``coco_vqgan_*.tsv`` (id, image codes, caption; ``--selected-cols
0,2,1``). Training samples: target = codes + eos, ``code_mask`` True (stage 1, cross-entropy;
stage 2's CLIP-reward SCST uses the same samples, see ``recipes/imagine/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from openofa.errors import OFAError
from openofa.tasks.base import Example, Field, Task, layout

PROMPT = " what is the complete image? caption: {}"
MAX_WORDS = 64  # the original's max_src_length counts words here
TOP_K = 256
DEFAULT_SEED = 0


def caption_of(text: str, max_words: int = MAX_WORDS) -> str:
    return " ".join(text.strip().split()[:max_words])


def source(tok, text: str, max_words: int = MAX_WORDS) -> list[int]:
    return tok.encode(PROMPT.format(caption_of(text, max_words)), bos=True, eos=True)


def code_grid(ofa) -> int:
    """Codes per side of the model's image-code grid (``code_image_size / 8``)."""
    cfg = ofa.model.config
    if not cfg.code_dict_size:
        raise OFAError("this model has no image codes (code_dict_size 0): it cannot draw images; the project's "
                       "own drawing model is openofa.load('mini-draw') (ofa imagine uses it when no --model is given)")
    return int(cfg.code_image_size) // 8


def generation_defaults(ofa, samples: int, n_codes: int) -> dict[str, Any]:
    cfg = ofa.model.config
    return dict(beam_size=samples, nbest=samples, sampling=True, sampling_topk=TOP_K, temperature=1.0,
                min_len=n_codes, max_len_a=0, max_len_b=n_codes, max_len=n_codes, gen_code=True,
                constraint_range=(cfg.code_0, cfg.code_0 + cfg.code_dict_size), seed=DEFAULT_SEED)


# ---- the separate models: the VQGAN decoder and CLIP ---------------------------------------------------

_BESIDE = {
    "vqgan": ("vqgan", "last.ckpt", "vqgan.ckpt", "vqgan.safetensors"),
    "clip": ("clip/ViT-B-16.pt", "clip/ViT-B-16.safetensors", "ViT-B-16.pt", "ViT-B-16.safetensors", "clip.safetensors"),
}
_HOW = {"vqgan": "the VQGAN image decoder: pass vqgan=PATH (--vqgan), a folder with last.ckpt and model.yaml",
        "clip": "CLIP ViT-B/16 weights for reranking: pass clip=PATH (--clip), a state dict in OpenAI's layout"}


def component(ofa, kind: str, path: str | None = None):
    """The VQGAN or CLIP model of ``ofa``: from ``path``, else ``ofa.components[kind]``, else
    found beside the model's file; loaded once per path."""
    store = ofa.components
    if path is None and kind in store:
        return store[kind]
    if path is None and ofa.source:
        folder = Path(ofa.source)
        folder = folder if folder.is_dir() else folder.parent
        for name in _BESIDE[kind]:
            if (folder / name).exists():
                path = str(folder / name)
                break
    if path is None:
        raise OFAError(f"no {_HOW[kind]}")
    key = f"{kind}:{Path(path).resolve()}"
    if key not in store:
        if kind == "vqgan":
            from openofa import vqgan

            store[key] = vqgan.load(path).to(ofa.device)
        else:
            from openofa import clip

            store[key] = clip.load(path).to(ofa.device)
    return store[key]


def decode_codes(vq, codes: torch.Tensor, chunk: int = 4) -> list:
    """PIL images of code grids (N, g, g), decoded a few at a time (the VQGAN is memory hungry)."""
    from openofa.vqgan import to_pil

    images = []
    for i in range(0, codes.shape[0], chunk):
        images += to_pil(vq.decode(codes[i:i + chunk]))
    return images


def rerank_images(clip_model, images: list, text: str) -> tuple[list[int], list[float]]:
    """Image order by CLIP similarity to ``text`` (best first) and each image's score."""
    from openofa import clip

    scores = clip.scores(clip_model, images, text).tolist()
    order = sorted(range(len(images)), key=lambda i: -scores[i])
    return order, scores


def _read(rec, fields, where, targets):
    from openofa.data.pretrain import _read_codes
    from openofa.data.records import field_str

    rec.text = field_str(fields, "text", where)
    if fields.get("code") not in (None, ""):  # training targets; evaluation reads the caption alone
        _read_codes(rec, fields, where)


def _check_samples(samples: Any) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise OFAError(f"imagine: samples must be a positive integer, got {samples!r}")
    return samples


class Imagine(Task):
    name = "imagine"
    help = "draw images from a text (text-to-image, VQGAN codes)"
    aliases = ("image_gen", "image-gen", "t2i")
    inputs = (Field("text", "text", "what to draw", required=True),)
    options = (
        Field("samples", "int", "images drawn per text (the original's beam; default 16)", default=16),
        Field("rerank", "bool", "order the images by CLIP similarity to the text (needs CLIP weights)"),
        Field("vqgan", "text", "VQGAN folder or last.ckpt (default: beside the model)"),
        Field("clip", "text", "CLIP ViT-B/16 weights, OpenAI layout (default: beside the model)"),
    )
    # coco_vqgan_{train,dev}.tsv: id, image codes (space-separated), caption; --selected-cols 0,2,1
    layouts = (layout("imagine", ["id", "text", "code"], [0, 2, 1], owner="imagine", read=_read,
                      optional=["code"], image=False, patch_image_size=None, max_src_length=MAX_WORDS,
                      max_tgt_length=1024, doc="id, image codes, caption"),)
    languages = ("en",)
    output = "images"
    metric_name = "CLIP score"
    literal_inputs = True
    writes_images = True

    def prepare(self, ofa, text: str) -> Example:
        if not text.strip():
            raise OFAError("imagine: the text is empty")
        return Example(source(ofa.tokenizer, text), info={"caption": caption_of(text)})

    def predict(self, ofa, examples, samples: int = 16, rerank: bool | None = None, vqgan: str | None = None,
                clip: str | None = None, **options):
        samples = _check_samples(samples)
        grid = code_grid(ofa)
        vq = component(ofa, "vqgan", vqgan)
        clip_model = component(ofa, "clip", clip) if rerank else None
        if grid * vq.factor != ofa.model.config.code_image_size:
            raise OFAError(f"the VQGAN's factor {vq.factor} does not fit the model's code_image_size "
                           f"{ofa.model.config.code_image_size} (a {grid}x{grid} grid)")
        defaults = generation_defaults(ofa, samples, grid * grid)
        hypos = ofa.generate(examples, defaults, task=self.name, every=True, **options)
        code_0 = ofa.model.config.code_0
        out = []
        for ex, hyps in zip(examples, hypos):
            codes = torch.stack([h.tokens[:-1] for h in hyps]).to(ofa.device) - code_0
            images = decode_codes(vq, codes.view(len(hyps), grid, grid))
            result = {"images": images, "scores": [float(h.score) for h in hyps]}
            if clip_model is not None:
                order, scores = rerank_images(clip_model, images, ex.info["caption"])
                result = {"images": [images[i] for i in order], "scores": [result["scores"][i] for i in order],
                          "clip_scores": [scores[i] for i in order]}
            out.append(result)
        return out

    def format(self, result):
        files = result.get("files") or [f"image {i}" for i in range(len(result["images"]))]
        key = "clip_scores" if "clip_scores" in result else "scores"
        return "\t".join(f"{f} ({s:.4f})" for f, s in zip(files, result[key]))

    def save(self, result: dict, folder: Path, name: str, used: set) -> dict:
        """Write a result's images as ``<folder>/<name>_<k>.png`` (best first when reranked);
        the result then names the files instead of holding the images."""
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())[:60].strip("_") or "image"
        files = self.write_images(result["images"], folder, stem, used)
        out = {k: v for k, v in result.items() if k != "images"}
        return {"files": files, **out}

    # ---- training and evaluation -------------------------------------------------------------------
    def sample(self, b, r):
        codes = r.extra.get("code") or []
        size = b.tok.dictionary.code_dict_size
        bad = [c for c in codes if not 0 <= c < size]
        if not codes or bad:
            from openofa.data.records import BadRow

            what = "no image codes" if not codes else f"image code {bad[0]} is outside 0..{size - 1}"
            raise BadRow(f"{r.where}: {what}", "code")
        first_code = len(b.tok) - size - b.num_bins
        src = source(b.tok, r.text or "", b.max_src_length)
        return b.sample(r, src, [first_code + c for c in codes], None, code_mask=True)

    def reference(self, r):
        return caption_of(r.text or "")

    def inputs_of(self, r, layout):
        return {"text": r.text}

    def prediction(self, result):
        """The best image's CLIP score and the image (the original keeps the top-1 for FID/IS)."""
        return {"clip_score": result["clip_scores"][0], "top1": result["images"][0]}

    def eval_options(self, refs, options):
        options = dict(options)
        self.fid_stats = options.pop("fid_stats", None)  # reference statistics (gt_stat.npz)
        options.setdefault("samples", 24)  # the original's evaluation draws 24 per caption
        return {**options, "rerank": True}

    def metric(self, predictions, references, layout):
        """Mean over texts of the best image's CLIP score (the original's validation score); with
        reference statistics also FID and IS of the top-1 images (``metrics/image_gen.py``)."""
        best = [p["clip_score"] for p in predictions]
        out = {self.metric_name: sum(best) / len(best) if best else 0.0}
        if getattr(self, "fid_stats", None):
            from openofa.metrics.image_gen import fid_and_is

            out.update(fid_and_is([p["top1"] for p in predictions], self.fid_stats))
        return out
