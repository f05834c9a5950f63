"""The Python API: ``m = openofa.load(path); m.caption(image)``.

:class:`OFA` owns one model, its tokenizer and the shared generator; each task (``openofa.tasks``)
only builds inputs and reads outputs. Every method takes one input or a list and answers in kind.
"""

from __future__ import annotations

import dataclasses
import os
import string
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch

from openofa.checkpoints.settings import TASK_SPECIFIC, ZERO_SHOT, own_task
from openofa.device import resolve_device
from openofa.errors import OFAError, OFAWarning
from openofa.generation import GenerationConfig, SequenceGenerator, Trie, score_candidates
from openofa.precision import INT8_MODES, is_int8, resolve_dtype
from openofa.tasks import Example, Task, get_task
from openofa.text.tokenizer import OFATokenizer
from openofa.vision.transforms import IMAGENET_MEAN, IMAGENET_STD, OFA_MEAN, OFA_STD, ImagePreprocess, collate_images

class OFA:
    """A loaded model ready for every task."""

    def __init__(self, model, *, image_size: int | None = None, task_settings: dict | None = None,
                 batch_size: int = 8, prepare_workers: int | None = None, zero_shot: bool = False,
                 any_task: bool = False, source: str | None = None) -> None:
        self.model = model.eval()
        #: where the model came from (a path; None: built in memory), for :meth:`describe`
        self.source = source
        #: run tasks the model records it was not trained for (else they are refused)
        self.any_task = bool(any_task)
        self._tokenizer: OFATokenizer | None = None
        #: image side for all tasks; None = the checkpoint's / each task's own default
        self.image_size = image_size
        # task settings saved with the model (our format keeps them in config.extra["task"]), then the
        # checkpoint's task section, then what the caller says
        self.task_settings = {**dict(model.config.extra.get("task", {})), **dict(task_settings or {})}
        self.batch_size = batch_size
        #: threads that read and resize a batch's inputs; None = one per CPU core, at most 8
        self.prepare_workers = prepare_workers
        #: the original's zero-shot evaluation settings per task (for the pretrained files)
        self.zero_shot = bool(zero_shot)
        #: other models a task uses beside this one, loaded once (text-to-image: "vqgan", "clip")
        self.components: dict[str, Any] = {}

    @property
    def tokenizer(self) -> OFATokenizer:
        """The tokenizer of the model's vocabulary, built on first use (a model whose vocabulary
        matches no tokenizer still loads; its tasks then fail with one clear error)."""
        if self._tokenizer is None:
            self._tokenizer = OFATokenizer.for_config(self.model.config)
        return self._tokenizer

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, *, ema: bool | None = None, device: str | None = None,
             dtype: str | torch.dtype | None = None, decoder_dtype: str | torch.dtype | None = None,
             image_size: int | None = None, fold_batchnorm: bool = True, prepack: bool = True,
             zero_shot: bool = False, any_task: bool = False, adapter: str | Path | None = None,
             merge_adapter: bool = True, early_exit: float | str | tuple | None = None,
             calibration: Sequence | None = None) -> "OFA":
        """Load an official ``.pt``, a Hugging Face folder or one of ours (see ``openofa.checkpoints``);
        without a path, the project's own small model shipped in the package; a shipped model's name
        (``"mini"``, ``"mini-draw"``, ``"mini-read"``: ``openofa.weights.BUNDLED_MODELS``) loads that one.

        ``ema``: None (default) uses the EMA weights of an official file that carries them, as the
        original's evaluation of those files does (``--ema-eval``: the VQA files); True requires
        them, False takes the plain weights.

        ``dtype`` sets the image trunk and encoder precision (``auto``: bf16 or fp16 where this
        machine computes them faster, else float32; see ``openofa.precision``); the decoder stays
        float32 unless ``decoder_dtype`` says otherwise (see :meth:`OFAModel.set_precision`).
        ``int8`` (CPU): the image trunk in static int8, the rest float32; ``int8-bf16``: the encoder's
        transformer in bf16 too (``openofa.model.int8_trunk``:
        its activation scales come from ``calibration``, images like the ones you will run, paths or
        PIL images; default: 16 synthetic pictures, see :meth:`quantize_trunk`). ``fold_batchnorm``
        folds the image trunk's BatchNorms into its convolutions (the same outputs up to rounding,
        a faster trunk; ``model.state_dict()`` then lacks the BatchNorm keys): pass False to keep
        the model exactly in the checkpoint's layout. ``prepack`` (CPU) keeps a oneDNN-packed copy
        of the decoder's large weights (:meth:`OFAModel.prepack`): faster decoding for one more copy
        of those weights in memory (61-70 MB for tiny, 300-420 MB for base in float32, depending on
        which smaller weights this CPU multiplies faster packed); pass False to save it.
        ``zero_shot`` applies the original's zero-shot evaluation settings to a pretrained file (VQA:
        480 px, no decoder prompt, open beam 20 with unnormalised scores; grounding: 480 px;
        entailment: 384 px), instead of the pretraining settings the file carries. ``any_task`` runs
        tasks the model records it was not trained for (:meth:`trained_tasks`) instead of refusing.
        ``adapter``: an adapter folder (parameter-efficient tuning, ``openofa.petl.files``) applied on
        top of the loaded model; its LoRA updates are merged into the weights unless
        ``merge_adapter=False`` (the same outputs, no cost at inference), and the tasks it was trained
        for join the model's. ``early_exit``: MuE early exit at inference, a cosine-similarity threshold
        in (0, 1] for encoder and decoder, or an (encoder, decoder) pair with None for a stack that runs
        whole (``openofa.model.early_exit``, ``docs/early_exit.md``); None (default) runs every layer."""
        from openofa.checkpoints import load_checkpoint
        from openofa.model import model_from_state_dict
        from openofa.model.early_exit import parse as parse_early_exit, set_early_exit

        from openofa.weights import BUNDLED_MODELS, bundled_model

        name = "mini" if path is None else str(path)
        if path is None or (name in BUNDLED_MODELS and not Path(name).exists()):  # a shipped model, by name
            path = bundled_model(name)
            if path is None:
                raise OFAError(f"this installation has no bundled model {name!r}: pass a checkpoint "
                               "path (official .pt, HF folder, or ours)")
        int8 = is_int8(dtype)
        if int8 and str(device or "cpu").split(":")[0] not in ("cpu", "auto"):
            raise OFAError(f"dtype {dtype} runs on CPU only, not on {device}; use bf16 or fp16 there")
        device = resolve_device(device)  # before reading weights: a bad device is a one-line error
        exit_thresholds = parse_early_exit(early_exit)  # likewise a bad threshold
        config, state_dict, meta = load_checkpoint(path, ema=ema)
        model = model_from_state_dict(config, state_dict, source=str(path))
        adapter_tasks: list[str] = []
        if adapter is not None:
            from openofa.petl import merge_lora
            from openofa.petl.files import load_adapter

            adapter_tasks = list(load_adapter(model, adapter).get("tasks") or [])
            if merge_adapter:
                merge_lora(model)
        model = model.to(device=device).eval()
        if fold_batchnorm:
            model.fold_batchnorm()
        model.set_precision(INT8_MODES[dtype] if int8 else resolve_dtype(dtype, model.device),
                            resolve_dtype(decoder_dtype, model.device))
        if prepack:
            model.prepack()  # CPU: the decoder's large weights laid out once for oneDNN (a no-op elsewhere)
        if early_exit is not None:
            set_early_exit(model, exit_thresholds)
        task = dict(meta.get("task") or {}) if isinstance(meta, dict) else {}
        if adapter_tasks and isinstance(task.get("tasks"), (list, tuple)):
            task["tasks"] = list(dict.fromkeys([*task["tasks"], *adapter_tasks]))
        elif adapter_tasks and own_task(task) is not None:
            task["tasks"] = list(dict.fromkeys([own_task(task), *adapter_tasks]))
        ofa = cls(model, image_size=image_size, task_settings=task, zero_shot=zero_shot, any_task=any_task,
                  source=str(path))
        if int8:
            ofa.quantize_trunk(calibration)
        elif calibration is not None:
            raise OFAError("calibration images are for dtype='int8' (the int8 image trunk's scales)")
        return ofa

    def quantize_trunk(self, calibration: Sequence | None = None):
        """Run the image trunk in static int8 (CPU; ``openofa.model.int8_trunk``), its activation
        scales measured on ``calibration``: images (paths or PIL images) like the ones the model will
        see, prepared as the model's own task (else captioning) prepares them. Without it, 16
        synthetic pictures that span the whole pixel range (``openofa.vision.calibration``):
        generous ranges, so a few of your own images usually do better. Returns the int8 trunk."""
        from openofa.model.int8_trunk import quantize_trunk

        task = own_task(self.task_settings) or "caption"  # the model's own preprocessing
        if calibration is None:
            from openofa.vision.calibration import calibration_images

            calibration = calibration_images(16, self.task_image_size(self.task(task)))
        images = [self.image_tensor(im, task) for im in calibration]
        if not images:
            raise OFAError("calibration needs at least one image")
        batches = [torch.stack(images[i:i + 8]) for i in range(0, len(images), 8)]
        return quantize_trunk(self.model, batches)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- what the model is and knows ------------------------------------------------------------
    def trained_tasks(self) -> list[str] | None:
        """The tasks the model was trained for, as its files record them: our format's ``tasks``
        setting, or an official finetuned file's own task; None when the file does not say (a
        pretrained file, the Hugging Face port), and every task is run."""
        recorded = self.task_settings.get("tasks")
        if isinstance(recorded, (list, tuple)) and recorded:
            return [str(t) for t in recorded]
        own = own_task(self.task_settings)
        return [own] if own is not None and not self.zero_shot else None

    def is_bundled(self) -> bool:
        """Whether this is one of the models shipped in the package (``mini``, ``mini-draw``, ``mini-read``)."""
        from openofa.weights import bundled_name

        return bundled_name(self.source) is not None

    def describe(self) -> str:
        """One line naming the model: where it came from, its size, its vocabulary, its tasks."""
        cfg = self.model.config
        params = sum(p.numel() for p in self.model.parameters())
        tasks = self.trained_tasks()
        known = f"trained for {', '.join(tasks)}" if tasks else "tasks not recorded"
        from openofa.weights import bundled_name

        if bundled_name(self.source) == "mini-read":
            return (f"the project's own reading model ({params / 1e6:.1f}M parameters, {known}; trained on "
                    "single words and numbers of lower-case letters and digits drawn in one font: give --model "
                    "for a real checkpoint)")
        if self.is_bundled() and cfg.code_dict_size:
            return (f"the project's own drawing model ({params / 1e6:.1f}M parameters, {known}; trained on "
                    "procedural scenes of coloured shapes: it draws one to three of them, on a plain background, "
                    "at 64 px; give --model for a real checkpoint)")
        if self.is_bundled():
            words = self.tokenizer.dictionary.nspecial
            n = len(self.tokenizer) - words - cfg.num_bins - cfg.code_dict_size
            return (f"the project's own small model ({params / 1e6:.1f}M parameters, {known}; trained on "
                    f"procedural scenes of coloured shapes, it knows {n} word pieces and no photographs: "
                    "give --model for a real checkpoint)")
        name = self.source or "a model built in memory"
        return f"{name} ({params / 1e6:.1f}M parameters, {cfg.language}, {known})"

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` that the model's vocabulary spells with ``<unk>``."""
        tok = self.tokenizer
        if tok.unk not in tok.encode(" " + text):  # the common case, one pass
            return []
        words = [w.strip(string.punctuation) or w for w in text.split()]
        return [w for w in words if tok.unk in tok.encode(" " + w)]

    def warn_unknown(self, task: str, field: str, text: str) -> None:
        """Warn (``OFAWarning``) about the words of an input the model cannot read."""
        unknown = self.unknown_words(text)
        if unknown:
            warnings.warn(f"{task}: the model does not know the word(s) {', '.join(sorted(set(unknown)))} "
                          f"of the {field}; it reads them as <unk>", OFAWarning, stacklevel=3)

    def encode_candidates(self, task: str, what: str, words: Sequence[str]) -> list[list[int]]:
        """The ids of each candidate (answers, class names, labels) with a leading space. Candidates
        the model's vocabulary can only spell with ``<unk>`` get a warning; two or more that then
        become the same ids (they would score alike, and the first would win) are a one-line error."""
        tok = self.tokenizer
        ids = [tok.encode(" " + w) for w in words]
        spelt: dict[tuple, list[str]] = {}  # the unknown candidates, by the ids they read as
        for w, i in zip(words, ids):
            if tok.unk in i:
                spelt.setdefault(tuple(i), []).append(w)
        alike = sorted(w for group in spelt.values() if len(group) > 1 for w in group)
        if alike:
            raise OFAError(f"{task}: the model's vocabulary has no word for {what} "
                           f"{', '.join(map(repr, alike[:5]))}{' ...' if len(alike) > 5 else ''}: they read "
                           f"alike (<unk>) and cannot be told apart; choose {what} it knows")
        if spelt:
            unknown = [w for group in spelt.values() for w in group]
            warnings.warn(f"{task}: the model reads {what} {', '.join(map(repr, unknown[:5]))} with <unk>",
                          OFAWarning, stacklevel=3)
        return ids

    # ---- helpers used by the tasks -------------------------------------------------------------
    def task(self, name: str | Task) -> Task:
        """The task object for a name (``caption``, ``ground`` ...) or the task itself."""
        if isinstance(name, Task):
            return name
        return get_task(name)

    def setting(self, task: str, key: str, default: Any = None) -> Any:
        """The model's setting ``key`` for ``task``: with ``zero_shot`` the original's zero-shot
        script's value for that task, else the file's value (task-specific ones only when the file
        was finetuned for ``task``, or names no task), else ``default``."""
        if self.zero_shot and key in ZERO_SHOT.get(task, {}):
            return ZERO_SHOT[task][key]
        own = own_task(self.task_settings)
        if key in TASK_SPECIFIC and own is not None and own != task:
            return default
        value = self.task_settings.get(key)
        return default if value is None else value

    def task_image_size(self, task: Task) -> int:
        if self.image_size is not None:
            return int(self.image_size)
        if not task.settings_apply(self):
            return task.image_size  # e.g. a captioning file's image side does not apply to grounding
        size = self.setting(task.name, "patch_image_size")
        return int(size) if size else task.image_size

    def preprocess(self, task: str | Task) -> ImagePreprocess:
        """How ``task``'s images are prepared for this model: the side from the model's settings (or
        ``image_size``), mean/std by ``imagenet_default_mean_and_std`` (0.5/0.5 unless the checkpoint
        says ImageNet), and the task's resize (``Task.image_mode``: a square resize, or grounding's
        RandomResize with ``max_image_size``)."""
        task = self.task(task)
        size = self.task_image_size(task)
        if size < 16 or size % 16:  # the trunk's stride: another side loses pixels or gives no patch
            near = " or ".join(str(v) for v in sorted({max(16, size // 16 * 16), (size // 16 + 1) * 16}))
            raise OFAError(f"image size {size} is not a positive multiple of 16 (the image trunk's stride); use {near}")
        if size > self.model.max_image_size:  # checked before resizing: a huge size would exhaust memory
            raise OFAError(f"image size {size} is larger than the model's image positions cover "
                           f"({self.model.max_image_size} pixels a side)")
        imagenet = bool(self.task_settings.get("imagenet_default_mean_and_std", False))
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (OFA_MEAN, OFA_STD)
        return ImagePreprocess(size, mean, std, mode=task.image_mode,
                               max_size=size if task.image_mode == "refcoco" else None)

    def image_tensor(self, image, task: str | Task, return_size: bool = False):
        tensor, w, h = self.preprocess(task)(image)
        return (tensor, w, h) if return_size else tensor

    def decode_text(self, tokens: torch.Tensor | Sequence[int]) -> str:
        ids = [int(t) for t in tokens]
        return self.tokenizer.decode([t for t in ids if t != self.tokenizer.eos])

    def answer_trie(self, answers: Iterable[str], task: str = "vqa") -> Trie:
        tok = self.tokenizer
        return Trie.from_answers(self.encode_candidates(task, "answers", list(answers)), bos=tok.bos, eos=tok.eos)

    def _collate(self, examples: list[Example]) -> dict[str, torch.Tensor | None]:
        pad = self.tokenizer.pad
        width = max(len(e.src) for e in examples)
        src = torch.full((len(examples), width), pad, dtype=torch.long)
        for i, e in enumerate(examples):
            src[i, : len(e.src)] = torch.tensor(e.src, dtype=torch.long)
        lengths = torch.tensor([len(e.src) for e in examples])
        images = masks = None
        if any(e.image is not None for e in examples):
            images, masks = collate_images([e.image for e in examples])
            images, masks = images.to(self.device), masks.to(self.device)
        return {"src_tokens": src.to(self.device), "src_lengths": lengths.to(self.device),
                "patch_images": images, "patch_masks": masks}

    def decoding(self, defaults: dict[str, Any], task: str | None = None, **overrides: Any) -> dict[str, Any]:
        """The decoding settings :meth:`generate` uses: a task's ``defaults``, updated by the model's
        own settings for ``task`` (``task_settings["generation"][task]``), then by ``overrides``."""
        defaults = {**defaults, **dict(self.task_settings.get("generation", {}).get(task, {}))}
        rng = self.setting(task, "constraint_range") if task else None
        if rng:  # the file's constraint_range, as the original's build_generator passes it
            defaults["constraint_range"] = rng
        if self.zero_shot and task in ZERO_SHOT:
            defaults.update(ZERO_SHOT[task].get("generation", {}))
        known = {f.name for f in dataclasses.fields(GenerationConfig)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise OFAError(f"unknown decoding option(s): {', '.join(bad)}")
        return {**defaults, **{k: v for k, v in overrides.items() if v is not None}}

    def generate(self, examples: list[Example], defaults: dict[str, Any], constraints: Trie | None = None,
                 task: str | None = None, every: bool = False, **overrides: Any):
        """Best hypothesis per example with the task's decoding ``defaults``, updated by the model's
        own settings for ``task`` (``task_settings["generation"][task]``), then by ``overrides``;
        with ``every``, each example's list of hypotheses."""
        gen = SequenceGenerator(GenerationConfig(**self.decoding(defaults, task, **overrides)))
        batch = self._collate(examples)
        prefix = None
        if any(e.prefix for e in examples):
            width = max(len(e.prefix) for e in examples)
            prefix = torch.full((len(examples), width), self.tokenizer.pad, dtype=torch.long)
            for i, e in enumerate(examples):
                prefix[i, : len(e.prefix)] = torch.tensor(e.prefix, dtype=torch.long)
            prefix = prefix.to(self.device)
        hypos = gen.generate(self.model, batch["src_tokens"], batch["src_lengths"], batch["patch_images"],
                             batch["patch_masks"], prefix_tokens=prefix, constraints=constraints)
        return hypos if every else [h[0] for h in hypos]

    def score_candidates(self, examples: list[Example], candidates: list[list[int]]) -> torch.Tensor:
        """(B, C) summed log-probs of each candidate (plus eos) after each example's prefix, with the
        log-softmax renormalised over the candidates' trie as the original's evaluation does."""
        tok = self.tokenizer
        trie = Trie.from_answers(candidates, bos=tok.bos, eos=tok.eos)
        batch = self._collate(examples)
        return score_candidates(self.model, batch["src_tokens"], candidates, batch["src_lengths"],
                                batch["patch_images"], batch["patch_masks"],
                                prompts=[e.prefix for e in examples], constraints=trie)

    # ---- running a task --------------------------------------------------------------------------
    def run(self, task: str | Task, inputs: Sequence[dict[str, Any]], *, batch_size: int | None = None,
            progress: bool = False, **options: Any) -> list[dict[str, Any]]:
        """Run ``task`` on many inputs (each a dict of the task's input fields), in batches; the
        first bad input raises (see :meth:`stream` to keep going)."""
        return [result for _, result in self.stream(task, inputs, batch_size=batch_size, progress=progress,
                                                   **options)]

    def stream(self, task: str | Task, inputs: Sequence[dict[str, Any]], *, batch_size: int | None = None,
               progress: bool = False, skip_bad: bool = False, **options: Any) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` for each input, in input order, a batch at a time as they are made.
        With ``skip_bad`` an input that cannot be read (a missing or broken image, an empty text)
        gives ``(index, OFAError)`` and the others go on; without it the first one raises."""
        task = self.task(task)
        language = self.model.config.language
        if language not in task.languages:
            raise OFAError(f"{task.name}: this is a {language} model and {task.name} has prompts in "
                           f"{', '.join(task.languages)} only (as in the original)")
        trained = self.trained_tasks()
        if trained is not None and task.name not in trained and not self.any_task:
            from openofa.weights import TASK_MODELS, bundled_model

            own = TASK_MODELS.get(task.name)
            hint = (f"; the project's own model for it is openofa.load({own!r})"
                    if own is not None and self.is_bundled() and bundled_model(own) is not None else "")
            raise OFAError(f"{task.name}: this model was not trained for {task.name} (it was trained for "
                           f"{', '.join(trained)}){hint}; pass any_task=True (--any-task) to run it anyway")
        bs = self.batch_size if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise OFAError(f"batch size must be a positive integer, got {bs!r}")
        for i, item in enumerate(inputs):
            _check_input(task, i, item)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(inputs), desc=task.name, unit="input")
        # a batch's inputs are read and resized in parallel threads (PIL decodes and resizes
        # without the GIL), then the model runs alone: overlapping the two on a few cores slows
        # the model more than it saves. A bad input raises in input order.
        workers = min(bs, len(inputs), self.prepare_workers or min(os.cpu_count() or 1, 8))
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        try:
            for start in range(0, len(inputs), bs):
                chunk = inputs[start:start + bs]
                if pool is None:
                    prepared = [_attempt(task.prepare, self, item) for item in chunk]
                else:
                    futures = [pool.submit(_attempt, task.prepare, self, item) for item in chunk]
                    prepared = [f.result() for f in futures]
                good = []
                for i, ex in enumerate(prepared, start):
                    if isinstance(ex, OFAError) and not skip_bad:
                        raise ex
                    if not isinstance(ex, OFAError):
                        good.append((i, ex))
                results = iter(())
                if good:
                    with torch.inference_mode():
                        results = iter(task.predict(self, [ex for _, ex in good], **options))
                for i, ex in enumerate(prepared, start):
                    yield i, ex if isinstance(ex, OFAError) else next(results)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()

    def _call(self, task: str, key: str, fields: dict[str, Any], **options):
        """Run ``task`` on inputs given field by field: each field one value or a list (every list
        of one length, single values repeated); one result (its ``key``) when no field is a
        list, else a list of them."""
        spec = self.task(task)
        lists = {}
        for name, value in fields.items():
            kind = spec.field(name).type
            if kind == "text" and value is not None and not isinstance(value, (str, list, tuple)):
                raise OFAError(f"{spec.name}: {name} must be a string or a list of strings, "
                               f"got {type(value).__name__}")
            many = isinstance(value, (list, tuple)) and not (kind == "texts" and all(isinstance(v, str) for v in value))
            if many:
                lists[name] = list(value)
        lengths = {len(v) for v in lists.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{len(v)} {_plural(name)}" for name, v in lists.items())
            raise OFAError(f"{spec.name}: lists of different lengths ({sizes}); give lists of one length, "
                           f"or one value to use for every input")
        n = lengths.pop() if lengths else None
        items = [{k: (lists[k][i] if k in lists else v) for k, v in fields.items()}
                 for i in range(n if n is not None else 1)]
        out = [r[key] for r in self.run(spec, items, **options)]
        return out if n is not None else out[0]

    # ---- one method per task: each field one value or a list ---------------------------------------
    def caption(self, image, **options):
        """Caption one image (path, bytes, base64, PIL) or a list of them."""
        return self._call("caption", "caption", {"image": image}, **options)

    def vqa(self, image, question: str | Sequence[str], *, answers: Sequence[str] | None = None,
            mode: str | None = None, **options):
        """Answer a question about an image; with ``answers`` choose among them (mode allcand or trie).
        One image and several questions, several images and one question, or two lists of one length."""
        return self._call("vqa", "answer", {"image": image, "question": question},
                          answers=list(answers) if answers is not None else None, mode=mode, **options)

    def ground(self, image, text: str | Sequence[str], **options):
        """Box ``[x1, y1, x2, y2]`` (original-image pixels) of the region ``text`` describes (None
        when the model gives no box). One image and several texts, several images and one text, or
        two lists of one length."""
        return self._call("ground", "box", {"image": image, "text": text}, **options)

    def detect(self, image, **options):
        """Every object the model finds: ``[{"box": [x1, y1, x2, y2], "label": str}, ...]`` per image."""
        return self._call("detect", "objects", {"image": image}, **options)

    def ocr(self, image, **options):
        """The text of an image of one line of text (or a list of them); see ``docs/ocr.md``."""
        return self._call("ocr", "text", {"image": image}, **options)

    def entail(self, image, hypothesis: str | Sequence[str], premise: str | Sequence[str] | None = None, **options):
        """'yes', 'no' or 'maybe': does the image (and optional premise) support the hypothesis?"""
        return self._call("entail", "label", {"image": image, "hypothesis": hypothesis, "premise": premise},
                          **options)

    def classify(self, image, classes: Sequence[str], **options):
        """The best of ``classes`` for one image or a list of images."""
        return self._call("classify", "label", {"image": image}, classes=list(classes), **options)

    def classify_text(self, text: str | Sequence[str], text2: str | Sequence[str] | None = None, *,
                      task: str = "mnli", **options):
        """GLUE-style text classification (mnli, rte, mrpc, qqp, qnli, cola, sst2)."""
        return self._call("classify-text", "label", {"text": text, "text2": text2, "glue_task": task}, **options)

    def summarize(self, text: str | Sequence[str], **options):
        return self._call("summarize", "summary", {"text": text}, **options)

    def imagine(self, text: str | Sequence[str], *, samples: int = 16, seed: int | None = None, **options):
        """Draw ``samples`` images of a text (or of each of a list of texts): a dict with
        ``images`` (PIL), ``scores`` (mean log-prob of each image's codes) and, with
        ``rerank=True``, ``clip_scores`` (images ordered best first). Options: ``sampling_topk``,
        ``sampling_topp``, ``temperature``, ``vqgan``, ``clip`` (see ``docs/imagine.md``)."""
        texts = [text] if isinstance(text, str) else list(text)
        out = self.run("imagine", [{"text": t} for t in texts], samples=samples, seed=seed, **options)
        return out[0] if isinstance(text, str) else out

    def infill(self, image, **options):
        """Redraw the middle of an image from its border (the original's image-infilling
        pretraining task): a dict with ``image`` (PIL, the input's square with a new middle),
        ``images`` (one per sample) and ``scores``; see ``docs/imagine.md``."""
        images = image if isinstance(image, (list, tuple)) else [image]
        out = self.run("infill", [{"image": im} for im in images], **options)
        return out if isinstance(image, (list, tuple)) else out[0]


def load(path: str | Path | None = None, **kwargs: Any) -> OFA:
    """Shortcut for :meth:`OFA.load`."""
    return OFA.load(path, **kwargs)


def _attempt(prepare, ofa: "OFA", item: dict[str, Any]):
    """``prepare(ofa, **item)``, or the OFAError it raised (the caller decides to raise or skip)."""
    try:
        return prepare(ofa, **item)
    except OFAError as e:
        return e


def _check_input(task: Task, index: int, item: Any) -> None:
    """One-line errors for an input that does not fit the task's fields: not a dict, unknown or
    missing fields, or a value of the wrong type (the task would fail deep inside)."""
    fields = {f.name: f for f in task.inputs}
    expected = ", ".join(fields)
    if not isinstance(item, dict):
        raise OFAError(f"{task.name}: input {index} is a {type(item).__name__}; expected a dict with {expected}")
    unknown = [k for k in item if k not in fields]
    missing = [n for n, f in fields.items() if f.required and item.get(n) is None]
    if unknown or missing:
        what = "unknown field(s) " + ", ".join(unknown) if unknown else "no " + ", ".join(missing)
        raise OFAError(f"{task.name}: input {index} has {what}; expected {expected}")
    for name, value in item.items():
        fields[name].check(task.name, f"input {index}: ", value)


def _plural(name: str) -> str:
    return name if name.endswith("s") else name[:-1] + "ies" if name.endswith("y") else name + "s"
