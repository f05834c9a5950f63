"""Ours against the original OFA code, side by side on the same checkpoint file and inputs.

Rows: caption, VQA and grounding generation at batch 1 and 8 for tiny and base, and one training
update (tiny, batch 8, 384 px: forward, label-smoothed cross-entropy, backward, clipping, Adam).
Both implementations load the same official-layout ``.pt`` file, written here with the recipe
weights and the released files' flags (``disable_entangle``, ``scale_attn/fc/heads``), and read the
same image files (PNG) and texts, each through its own preprocessing:

* caption: 384 px, beam 5, ``max_len_b`` 16, no-repeat trigram (``evaluate_caption*.sh``);
* VQA: 480 px, ``prompt_type`` prev_output, beam 5 with unnormalised scores over a trie of
  candidate answers (``evaluate_vqa_beam*.sh``, ``--val-inference-type beamsearch``);
* grounding: 512 px, beam 5, exactly 4 tokens, no-repeat trigram, unconstrained
  (``evaluate_refcoco*.sh``; ours with ``restrict_to_bins=False``).

Ours runs its user path (``OFA.load`` as shipped, then ``OFA.run``: reading and resizing the
images, generation, post-processing). The original runs what its evaluation does per batch: its
task's dataset (``FileDataset`` over a TSV of base64 images) item by item, its collater and
``task.inference_step`` with the ``SequenceGenerator`` its task builds. Each implementation runs
in its own process (one per size and row kind, ``--threads`` threads each), the two take turns
within every round (the one going first alternates), one warm-up round is not counted and the
table shows the median of ``--rounds``. "same tokens" compares every sample's best hypothesis
(token ids, forced prefix included); for the training row it compares the loss of the first
(warm-up) update, where both start from the same weights (relative 1e-5).
Peak RSS is each row's own: the process's high-water mark is reset before the row (Linux
``/proc/self/clear_refs``), so it is the loaded model plus that row's working memory.

    python benchmarks/bench_vs_original.py                                # ours alone
    python benchmarks/bench_vs_original.py --original ~/src/OFA           # both, full table
    python benchmarks/bench_vs_original.py --original ~/src/OFA --sizes tiny --rounds 1 --json out.json

``--original`` is a checkout of https://github.com/OFA-Sys/OFA (with its vendored ``fairseq/``),
fetched by the user and never modified: it is put on ``sys.path`` and these import-time patches are
applied in its process only (nothing numerical changes):

1. Python 3.11 refuses a dataclass instance as a field default (fairseq's ``FairseqConfig``
   fields are ``CommonConfig()`` ...): the default's class gets an identity hash while the
   checkout's modules are imported, which restores what Python <= 3.10 accepted.
2. NumPy >= 1.24 dropped the aliases ``np.float``, ``np.int``, ``np.bool``, ``np.object``, ``np.str``
   that the 2022 code uses: they are set back to the builtins they stood for.
3. NumPy >= 1.24 refuses the ragged ``np.array(decoder_prompts)`` in the VQA collater: that module's
   ``np.array`` builds the 1-D object array older NumPy built.
4. Modules only other tasks import (speech, OCR, Chinese, metrics, timm, cv2, ...) are replaced by
   empty stand-ins when they are not installed; ``pkg_resources`` (gone from recent setuptools)
   is given with only its ``packaging`` attribute, which the CLIP module reads.
5. A torchvision wheel whose compiled operators do not match the installed torch (the PyPI wheel
   beside a CPU-only torch) fails to register its ``nms`` meta kernel at import: its two
   registration modules are skipped (the benchmark uses only the PIL transforms).
6. OmegaConf 2.3 renamed ``omegaconf._utils.is_primitive_type``, which fairseq swaps for an
   always-true check while it puts an ``argparse.Namespace`` into a config: the old name is given
   to the function, and the new name follows whatever the old one is set to.

The original side needs, beside torch/numpy/Pillow: ``pip install omegaconf==2.3.0
hydra-core==1.3.2 antlr4-python3-runtime==4.9.3 bitarray sacrebleu torchvision`` (a torchvision
matching the torch, or any with patch 5). ``--original-pythonpath DIR`` adds a folder holding them
to the original's process only (e.g. ``pip install --target DIR ...``), so this environment stays
as it is.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
IMAGE_SIZE = {"caption": 384, "vqa": 480, "grounding": 512, "train": 384}
ORIGINAL_TASK = {"caption": "caption", "vqa": "vqa_gen", "grounding": "refcoco", "train": "caption"}
QUESTIONS = ["what color is the disc?", "how many shapes are there?", "is there a square?",
             "what is on the left?", "what color is the background?", "is it daytime?",
             "what shape is yellow?", "where is the house?"]
EXPRESSIONS = ["the red disc", "blue square on the right", "yellow triangle", "the dark rectangle",
               "a house on the lawn", "the top left corner", "the biggest shape", "the small circle"]
CAPTIONS = ["a red disc and a blue square", "shapes on a green background", "a yellow triangle",
            "a gradient with a dark rectangle", "a house on a lawn at dusk", "two shapes side by side",
            "an orange rectangle on a gradient", "a picture of simple shapes"]
ANSWERS = ["yes", "no", "red", "blue", "green", "yellow", "two", "three", "left", "a yellow circle",
           "circle", "square", "triangle"]
PROMPT = " what does the image describe?"  # the original caption dataset's prompt
ROW_KINDS = ("caption", "vqa", "grounding", "train")


# ---- inputs shared by both sides ---------------------------------------------------------------

def make_images(folder: Path, n: int = 8) -> list[Path]:
    """``n`` deterministic synthetic PNGs of different sizes and modes (shapes on gradients)."""
    import numpy as np
    from PIL import Image, ImageDraw

    sizes = [(320, 240), (256, 256), (180, 300), (640, 480), (200, 150), (500, 375), (300, 300), (420, 280)]
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy + 40 * i) % 256)], -1).astype("uint8")
        im = Image.fromarray(base)
        d = ImageDraw.Draw(im)
        d.ellipse([w // 8, h // 8, w // 8 + w // 4, h // 8 + h // 4], fill=(220, 30, 30))
        d.rectangle([w // 2, h // 2, w // 2 + w // 5, h // 2 + h // 3], fill=(30, 30, 200 - 10 * i))
        d.polygon([(w // 4, h - 10), (w // 3, h // 2), (w // 2, h - 10)], fill=(230, 210, 40))
        if i % 4 == 2:
            im = im.convert("L")
        p = folder / f"img{i}.png"
        im.save(p)
        paths.append(p)
    return paths


def write_checkpoint(size: str, path: Path) -> None:
    """Official layout (the original trainer's), recipe weights, the released files' flags."""
    from openofa.checkpoints import recipe_state_dict
    from openofa.checkpoints.official import save_official
    from openofa.config import get_config

    config = get_config(size, disable_entangle=True)
    assert config.scale_attn and config.scale_fc and config.scale_heads, "released flags"
    save_official(path, config, recipe_state_dict(config))


def write_original_tables(folder: Path, images: list[Path]) -> None:
    """The TSV files the original's datasets read (base64 of the same image files) and its VQA
    candidate answers (``ans2label`` pickle)."""
    import pickle

    b64 = [base64.urlsafe_b64encode(p.read_bytes()).decode() for p in images]
    rows = {
        "caption": [[str(i), b64[i], CAPTIONS[i]] for i in range(len(images))],
        "vqa": [[str(i), b64[i], QUESTIONS[i], "1.0|!+yes", ""] for i in range(len(images))],
        "grounding": [[str(i), b64[i], EXPRESSIONS[i], "10,10,50,50"] for i in range(len(images))],
    }
    for kind, lines in rows.items():
        (folder / f"{kind}.tsv").write_text("".join("\t".join(r) + "\n" for r in lines))
    with open(folder / "ans2label.pkl", "wb") as f:
        pickle.dump({a: i for i, a in enumerate(ANSWERS)}, f)


def write_train_batch(folder: Path, images: list[Path], ckpt: Path) -> None:
    """One caption training batch (batch 8, 384 px), prepared once by our preprocessing and fed as
    the same tensors to both sides: source = prompt, target = caption + eos."""
    import torch

    from openofa import OFA

    ofa = OFA.load(ckpt, image_size=IMAGE_SIZE["train"], prepack=False)
    tok = ofa.tokenizer
    pad = tok.pad
    src = [[tok.bos] + tok.encode(PROMPT) + [tok.eos] for _ in images]
    tgt = [tok.encode(" " + c) + [tok.eos] for c in CAPTIONS[:len(images)]]
    prev = [[tok.bos] + t[:-1] for t in tgt]

    def pad_rows(rows):
        out = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out

    patch = torch.stack([ofa.image_tensor(str(p), "caption") for p in images])
    batch = {"src_tokens": pad_rows(src), "src_lengths": torch.tensor([len(r) for r in src]),
             "patch_images": patch, "patch_masks": torch.ones(len(images), dtype=torch.bool),
             "prev_output_tokens": pad_rows(prev), "target": pad_rows(tgt)}
    torch.save(batch, folder / "train_batch.pt")


# ---- measuring inside a worker ------------------------------------------------------------------

def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (VmHWM)
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class OursRunner:
    def __init__(self, kind: str, ckpt: Path, work: Path):
        import torch

        from openofa import OFA

        self.kind, self.work = kind, work
        self.images = sorted(work.glob("img*.png"), key=lambda p: int(p.stem[3:]))
        if kind == "train":
            from openofa.train.loss import LabelSmoothedCrossEntropy
            from openofa.train.optim import build_optimizer, set_train_mode, trainable_parameters

            self.model = OFA.load(ckpt, fold_batchnorm=False, prepack=False).model
            set_train_mode(self.model)
            self.params = trainable_parameters(self.model)
            self.optimizer = build_optimizer(self.params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
            self.criterion = LabelSmoothedCrossEntropy(0.1)
            self.batch = torch.load(work / "train_batch.pt")
            return
        self.ofa = OFA.load(ckpt, image_size=IMAGE_SIZE[kind], any_task=True)  # one file for every row
        self.hypos: list = []
        generate = self.ofa.generate

        def recording(*a, **k):
            out = generate(*a, **k)
            self.hypos.extend(out)
            return out

        self.ofa.generate = recording

    def run(self, batch: int) -> dict:
        if self.kind == "train":
            return self._train_step()
        imgs = [str(p) for p in self.images[:batch]]
        task, options = {"caption": ("caption", {}),
                         "vqa": ("vqa", {"answers": ANSWERS, "mode": "trie"}),
                         "grounding": ("ground", {"restrict_to_bins": False, "faithful": True})}[self.kind]
        if self.kind == "caption":
            inputs = [{"image": p} for p in imgs]
        elif self.kind == "vqa":
            inputs = [{"image": p, "question": q} for p, q in zip(imgs, QUESTIONS)]
        else:
            inputs = [{"image": p, "text": t} for p, t in zip(imgs, EXPRESSIONS)]
        self.hypos = []
        t = time.perf_counter()
        self.ofa.run(task, inputs, batch_size=batch, **options)
        secs = time.perf_counter() - t
        return {"seconds": secs, "tokens": [[int(x) for x in h.tokens] for h in self.hypos]}

    def _train_step(self) -> dict:
        from openofa.train.optim import clip_grad_norm, multiply_grads

        b = self.batch
        t = time.perf_counter()
        logits = self.model(src_tokens=b["src_tokens"], src_lengths=b["src_lengths"], patch_images=b["patch_images"],
                            patch_masks=b["patch_masks"], prev_output_tokens=b["prev_output_tokens"])
        out = self.criterion(logits, b)
        out.loss.backward()
        multiply_grads(self.params, 1.0 / out.sample_size)
        clip_grad_norm(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        secs = time.perf_counter() - t
        loss = out.loss.item() / out.sample_size
        self.first_loss = getattr(self, "first_loss", loss)  # the warm-up step's: same weights on both sides
        return {"seconds": secs, "loss": loss, "first_loss": self.first_loss}


# ---- the original's side (its process only) -----------------------------------------------------

OPTIONAL_MODULES = ("timm", "cv2", "librosa", "soundfile", "g2p_en", "pypinyin", "zhconv", "editdistance",
                    "Levenshtein", "datasets", "rouge_score", "pycocotools", "pycocoevalcap", "tensorboardX",
                    "einops", "ftfy", "pytorch_lightning", "scipy", "nltk", "jieba", "sentencepiece", "torchaudio")


def patch_for_original(root: Path) -> list[str]:
    """The import-time patches listed in this file's docstring. Returns what was applied."""
    import dataclasses
    import importlib.machinery
    import importlib.util
    import types

    import numpy as np

    applied = []
    root_s = str(root.resolve())
    process_class = dataclasses._process_class

    def _process_class(cls, *a, **k):  # 1: dataclass-instance defaults, as Python <= 3.10 took them
        module = sys.modules.get(cls.__module__)
        if str(Path(getattr(module, "__file__", "") or "/").resolve()).startswith(root_s):
            for value in list(vars(cls).values()):
                if isinstance(value, dataclasses.Field):
                    value = value.default
                if dataclasses.is_dataclass(value) and not isinstance(value, type) and type(value).__hash__ is None:
                    type(value).__hash__ = object.__hash__
        return process_class(cls, *a, **k)

    dataclasses._process_class = _process_class
    applied.append("dataclass defaults")
    for name, value in (("float", float), ("int", int), ("bool", bool), ("object", object), ("str", str),
                        ("long", int), ("unicode", str), ("complex", complex)):  # 2
        if name not in np.__dict__:
            setattr(np, name, value)
    applied.append("numpy aliases")

    class _Anything:
        def __init__(self, *a, **k):
            pass

        def __call__(self, *a, **k):
            return _Anything()

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Anything()

        def __mro_entries__(self, bases):
            return (object,)

    class _Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Anything()

    class _StubFinder:  # 4
        def __init__(self, names):
            self.names = set(names)

        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] not in self.names:
                return None
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

        def create_module(self, spec):
            m = _Stub(spec.name)
            m.__path__ = []
            return m

        def exec_module(self, module):
            pass

    missing = [n for n in OPTIONAL_MODULES if importlib.util.find_spec(n) is None]
    if missing:
        sys.meta_path.append(_StubFinder(missing))
        applied.append("stand-ins for " + ",".join(missing))
    if importlib.util.find_spec("pkg_resources") is None:
        import packaging.version  # noqa: F401

        m = types.ModuleType("pkg_resources")
        m.packaging = sys.modules["packaging"]
        sys.modules["pkg_resources"] = m
        applied.append("pkg_resources.packaging")
    try:  # 5
        import torchvision  # noqa: F401
    except RuntimeError:
        for name in list(sys.modules):
            if name.split(".")[0] == "torchvision":
                del sys.modules[name]
        for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
            sys.modules[name] = types.ModuleType(name)
        import torchvision  # noqa: F401
        applied.append("torchvision registrations skipped")
    try:  # 6
        from omegaconf import _utils as omegaconf_utils
    except ImportError:
        omegaconf_utils = None
    if omegaconf_utils is not None and not hasattr(omegaconf_utils, "is_primitive_type"):
        omegaconf_utils.is_primitive_type = omegaconf_utils.is_primitive_type_annotation

        def is_primitive_type_annotation(value):  # follows what fairseq sets the old name to
            return omegaconf_utils.is_primitive_type(value)

        omegaconf_utils.is_primitive_type_annotation = is_primitive_type_annotation
        applied.append("omegaconf is_primitive_type")
    sys.path[:0] = [root_s, str(root / "fairseq")]
    return applied


def _ragged_array_module(np):
    """``np`` as the VQA collater sees it: ``array`` of ragged lists gives a 1-D object array (3)."""
    import types

    shim = types.ModuleType("numpy_ragged")
    shim.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})

    def array(obj, *a, **k):
        try:
            return np.array(obj, *a, **k)
        except ValueError:
            out = np.empty(len(obj), dtype=object)
            for i, x in enumerate(obj):
                out[i] = x
            return out

    shim.array = array
    return shim


class OriginalRunner:
    def __init__(self, kind: str, ckpt: Path, work: Path, root: Path):
        import torch

        os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        self.applied = patch_for_original(root)
        from fairseq import options, tasks
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        m = state["cfg"]["model"]
        m = m if isinstance(m, dict) else vars(m)
        self.kind = kind
        argv = [str(work / f"{'caption' if kind == 'train' else kind}.tsv"), "--task", ORIGINAL_TASK[kind],
                "--arch", m["_name"], "--user-dir", str(root / "ofa_module"), "--bpe-dir", str(root / "utils/BPE"),
                "--patch-image-size", str(IMAGE_SIZE[kind]), "--max-src-length", "80", "--max-tgt-length", "20",
                "--num-bins", "1000", "--seed", "7", "--cpu"]
        if kind == "vqa":
            argv += ["--selected-cols", "0,1,2,3,4", "--prompt-type", "prev_output", "--val-inference-type",
                     "beamsearch", "--ans2label-file", str(work / "ans2label.pkl"), "--max-object-length", "30"]
        elif kind == "grounding":
            argv += ["--selected-cols", "0,1,2,3", "--max-image-size", "512"]
        else:
            argv += ["--selected-cols", "0,1,2"]
        if kind == "train":
            argv += ["--criterion", "adjust_label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                     "--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--adam-eps", "1e-08",
                     "--weight-decay", "0.01", "--lr", "1e-5", "--clip-norm", "1.0"]
        args = options.parse_args_and_arch(options.get_training_parser(), input_args=argv)
        for key, value in m.items():  # the file's architecture and flags win over the arch defaults
            if key not in ("_name", "patch_image_size") and hasattr(args, key):  # the image side is the row's
                setattr(args, key, value)
        cfg = convert_namespace_to_omegaconf(args)
        self.task = tasks.setup_task(cfg.task)
        self.model = self.task.build_model(cfg.model)
        self.model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
        del state
        if kind == "train":
            from fairseq import optim

            self.model.train()
            self.criterion = self.task.build_criterion(cfg.criterion)
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = optim.build_optimizer(cfg.optimizer, self.params)
            b = torch.load(work / "train_batch.pt")
            target = b.pop("target")
            self.sample = {"id": torch.arange(len(target)), "nsentences": len(target),
                           "ntokens": int(target.ne(1).sum()), "net_input": b, "target": target}
            return
        self.model.eval()
        self.model.prepare_for_inference_(cfg)
        gen = {"caption": dict(beam=5, max_len_a=0, max_len_b=16, min_len=1, no_repeat_ngram_size=3, lenpen=1,
                               unnormalized=False, temperature=1.0),
               "vqa": dict(beam=5, unnormalized=True, temperature=1.0),
               "grounding": dict(beam=5, min_len=4, max_len_a=0, max_len_b=4, no_repeat_ngram_size=3, lenpen=1,
                                 unnormalized=False, temperature=1.0)}[kind]
        self.generator = self.task.build_generator([self.model], argparse.Namespace(**gen))
        self.task.load_dataset("valid")
        self.dataset = self.task.datasets["valid"]
        if kind == "vqa":
            import data.mm_data.vqa_gen_dataset as vqa_data

            vqa_data.np = _ragged_array_module(vqa_data.np)

    def run(self, batch: int) -> dict:
        if self.kind == "train":
            return self._train_step()
        self.dataset.dataset._seek(0)  # its FileDataset reads rows in turn: start each batch at row 0
        t = time.perf_counter()
        sample = self.dataset.collater([self.dataset[i] for i in range(batch)])
        prefix = sample.get("prefix_tokens") if self.kind == "vqa" else None
        hypos = self.task.inference_step(self.generator, [self.model], sample, prefix_tokens=prefix)
        secs = time.perf_counter() - t
        order = [int(i) for i in sample["id"]]  # the uniq-ids 0..B-1: report in input order
        by_id = dict(zip(order, hypos))
        return {"seconds": secs, "tokens": [[int(x) for x in by_id[i][0]["tokens"]] for i in range(batch)]}

    def _train_step(self) -> dict:
        t = time.perf_counter()
        loss, sample_size, _ = self.task.train_step(self.sample, self.model, self.criterion, self.optimizer, 0)
        self.optimizer.multiply_grads(1.0 / float(sample_size))
        self.optimizer.clip_grad_norm(1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        secs = time.perf_counter() - t
        loss = float(loss) / float(sample_size)
        self.first_loss = getattr(self, "first_loss", loss)
        return {"seconds": secs, "loss": loss, "first_loss": self.first_loss}


def worker(args: argparse.Namespace) -> None:
    """Serve ``run BATCH`` requests on stdin, one JSON answer per line on the real stdout (whatever
    the implementation prints goes to stderr)."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.workdir)
    ckpt = work / f"{args.size}.pt"
    try:
        if args.worker == "ours":
            runner = OursRunner(args.kind, ckpt, work)
            ready = {"ready": True}
        else:
            runner = OriginalRunner(args.kind, ckpt, work, Path(args.original))
            ready = {"ready": True, "patches": runner.applied}
    except Exception as e:  # reported to the parent, which carries on without this side
        import traceback

        traceback.print_exc()
        out.write(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
        return
    out.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        batch = int(line)
        reset_peak_rss()
        try:
            res = runner.run(batch)
        except Exception as e:
            import traceback

            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"}
        res["peak_rss_mb"] = round(peak_rss_mb(), 1)
        out.write(json.dumps(res) + "\n")


# ---- the parent: alternate the two sides and print the table --------------------------------------

class Worker:
    def __init__(self, side: str, size: str, kind: str, args: argparse.Namespace, log):
        cmd = [sys.executable, str(HERE), "--worker", side, "--size", size, "--kind", kind,
               "--workdir", args.workdir, "--threads", str(args.threads)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        if side == "original":
            cmd += ["--original", args.original]
            if args.original_pythonpath:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.original_pythonpath, env.get("PYTHONPATH")]))
        self.side = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                     env=env)
        self.ready = self._read()
        if not self.ready.get("ready"):
            self.close()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            return {"ready": False, "error": f"the {self.side} process ended (exit {self.proc.wait()})"}
        return json.loads(line)

    def run(self, batch: int) -> dict:
        self.proc.stdin.write(f"{batch}\n")
        self.proc.stdin.flush()
        res = self._read()
        if "seconds" not in res:
            raise RuntimeError(f"{self.side}: {res.get('error', 'no answer')}")
        return res

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def measure(size: str, kind: str, batches: list[int], args: argparse.Namespace, log) -> list[dict]:
    sides = ["ours"] + (["original"] if args.original else [])
    workers = {}
    errors = {}
    for side in sides:
        w = Worker(side, size, kind, args, log)
        if w.ready.get("ready"):
            workers[side] = w
            if w.ready.get("patches"):
                print(f"  original ({size} {kind}): patches applied: {'; '.join(w.ready['patches'])}", flush=True)
        else:
            errors[side] = w.ready.get("error")
            print(f"  {side} ({size} {kind}) could not start: {errors[side]} (see {args.log})", flush=True)
    rows = []
    try:
        for batch in batches:
            results: dict[str, list[dict]] = {s: [] for s in workers}
            for r in range(args.rounds + 1):  # round 0 warms up
                order = list(workers) if r % 2 == 0 else list(workers)[::-1]
                for side in order:
                    try:
                        res = workers[side].run(batch)
                    except RuntimeError as e:  # that side stops; the other goes on
                        errors[side] = str(e)
                        print(f"  {side} ({size} {kind} batch {batch}) failed: {e} (see {args.log})", flush=True)
                        workers.pop(side).close()
                        results.pop(side)
                        continue
                    if r:
                        results[side].append(res)
            row = {"size": size, "row": kind, "batch": batch, "rounds": args.rounds}
            for side, rs in results.items():
                row[f"{side}_s"] = statistics.median(x["seconds"] for x in rs)
                row[f"{side}_all_s"] = [round(x["seconds"], 4) for x in rs]
                row[f"{side}_peak_rss_mb"] = max(x["peak_rss_mb"] for x in rs)
                if kind == "train":
                    row[f"{side}_first_loss"] = rs[-1]["first_loss"]
                    row[f"{side}_loss"] = rs[-1]["loss"]
                else:
                    row[f"{side}_tokens"] = rs[-1]["tokens"]
            if "original" in results and "ours" in results:
                row["ratio"] = row["original_s"] / row["ours_s"]
                if kind == "train":
                    a, b = row["ours_first_loss"], row["original_first_loss"]
                    row["same"] = abs(a - b) <= 1e-5 * max(abs(b), 1e-8)
                else:
                    row["same"] = row["ours_tokens"] == row["original_tokens"]
                    row["samples_same"] = sum(x == y for x, y in zip(row["ours_tokens"], row["original_tokens"]))
            for side, error in errors.items():
                row[f"{side}_error"] = error
            rows.append(row)
            print("  " + format_row(row), flush=True)
    finally:
        for w in workers.values():
            w.close()
    return rows


HEADER = (f"{'size':5} {'row':10} {'batch':>5} {'ours s':>8} {'orig s':>8} {'ratio':>6} {'same':>9} "
          f"{'ours MB':>8} {'orig MB':>8}")


def format_row(row: dict) -> str:
    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"

    same = "-"
    if "same" in row:
        same = ("yes" if row["same"] else "no") if row["row"] == "train" else \
            f"{row['samples_same']}/{row['batch']}"
    ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
    return (f"{row['size']:5} {row['row']:10} {row['batch']:>5} {num(row.get('ours_s'), '8.3f')} "
            f"{num(row.get('original_s'), '8.3f'):>8} {ratio:>6} {same:>9} "
            f"{num(row.get('ours_peak_rss_mb'), '8.0f')} {num(row.get('original_peak_rss_mb'), '8.0f'):>8}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", help="a checkout of OFA-Sys/OFA (with its fairseq/); without it, ours alone")
    p.add_argument("--original-pythonpath", help="folder with the original's extra packages (its process only)")
    p.add_argument("--sizes", default="tiny,base")
    p.add_argument("--rows", default=",".join(ROW_KINDS), help=f"of {','.join(ROW_KINDS)}")
    p.add_argument("--batches", default="1,8", help="generation batch sizes (the training row: batch 8)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-sizes", default="tiny", help="sizes that get the training row (default tiny)")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--workdir", help="checkpoints, images and tables (default: a temporary folder)")
    p.add_argument("--log", help="the workers' stderr (default: WORKDIR/workers.log)")
    p.add_argument("--worker", choices=("ours", "original"), help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    sizes = [s for s in args.sizes.split(",") if s]
    kinds = [k for k in args.rows.split(",") if k]
    bad = sorted(set(kinds) - set(ROW_KINDS))
    if bad:
        p.error(f"unknown rows {bad}; choose from {ROW_KINDS}")
    batches = [int(b) for b in args.batches.split(",") if b]
    if args.original:
        root = Path(args.original).expanduser().resolve()
        if not (root / "ofa_module").is_dir() or not (root / "fairseq" / "fairseq").is_dir():
            p.error(f"{root} is not an OFA checkout (no ofa_module/ or fairseq/fairseq/)")
        args.original = str(root)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_vs_original_")
        args.workdir = tmp.name
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    args.log = args.log or str(work / "workers.log")
    import torch

    images = make_images(work)
    for size in sizes:
        if not (work / f"{size}.pt").exists():
            write_checkpoint(size, work / f"{size}.pt")
    write_original_tables(work, images)
    if "train" in kinds:
        write_train_batch(work, images, work / f"{sizes[0]}.pt")
    print(f"torch {torch.__version__}, {args.threads} threads per process, {args.rounds} rounds after a warm-up; "
          f"original: {args.original or 'not given (ours alone)'}")
    print(HEADER)
    rows: list[dict] = []
    with open(args.log, "a") as log:
        for size in sizes:
            for kind in kinds:
                if kind == "train":
                    if size in args.train_sizes.split(","):
                        rows += measure(size, kind, [8], args, log)
                else:
                    rows += measure(size, kind, batches, args, log)
    print("\n" + HEADER)
    for row in rows:
        print(format_row(row))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rounds": args.rounds,
                                               "original": args.original, "torch": torch.__version__,
                                               "rows": rows}, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
