"""Per-task sample builders: a :class:`~openofa.data.records.Record` -> model inputs, built the
way the original's datasets (``data/mm_data``, ``cv_data``, ``nlu_data``, ``nlg_data``) build
them for training and validation.

A sample is a dict::

    id                  the record id
    source              LongTensor [bos] + prompt ids + [eos]
    target              LongTensor (ids + [eos]; prompt positions padded for prompt types
                        src / prev_output; GLUE targets have no eos, as in the original)
    prev_output_tokens  LongTensor ([bos] + ids, or the prompt + ids)
    patch_image         float (3, S, S) or None (text tasks)
    patch_mask          bool
    prefix              LongTensor: decoder prompt after bos, forced when generating
                        (empty for prompt_type "none")
    ref                 the evaluation reference (see :func:`reference`)
    where               "file:line"

plus ``conf`` (VQA: confidence of the trained answer) and ``w_resize_ratio``,
``h_resize_ratio``, ``region_coord``, ``attend_box`` (grounding; the last is the box in the
pixels of ``patch_image``, for :mod:`openofa.mini.box_attention`; VQA rows with a ``box`` have
it too). With a candidate answer list
(``ans2label_file`` / ``ans2label_dict``; VQA, entailment, classification, GLUE) also
``constraint_mask``: bool (len(target), vocab), the tokens the answer list allows at each answer
position (see :mod:`openofa.data.answers`).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from openofa.data.layouts import TaskLayout, get_layout
from openofa.data.records import BadRow, Record
from openofa.errors import OFAError
from openofa.tasks import task_of_layout
from openofa.tasks.base import PROMPT_TYPES
from openofa.text.tokenizer import OFATokenizer
from openofa.vision.transforms import IMAGENET_MEAN, IMAGENET_STD, OFA_MEAN, OFA_STD

__all__ = ["SampleBuilder", "make_builder", "reference", "PROMPT_TYPES"]


def _long(ids: Sequence[int]) -> torch.Tensor:
    return torch.tensor(list(ids), dtype=torch.long)


def reference(task: str, record: Record) -> Any:
    """What a prediction for ``record`` is scored against: the task's
    (:meth:`openofa.tasks.base.Task.reference`); pretraining rows have none."""
    layout = get_layout(task)
    if layout.owner is None:
        return record.label
    return task_of_layout(layout).reference(record)


def load_record_image(record: Record, cache=None):
    """The RGB image of a record (a path next to the data file, or a base64 column); an unreadable
    one raises :class:`BadRow` naming the file and line. ``cache``: a
    :class:`openofa.data.image_cache.DecodedImages` for image files."""
    from openofa.vision.io import decode_base64_image, load_image

    where = record.where
    try:
        if record.extra.get("image_is_path"):
            name = f"image {record.image}"
            if cache is not None:
                return cache.load(Path(record.image), lambda path: load_image(path, name=name))
            return load_image(Path(record.image), name=name)
        return load_image(decode_base64_image(record.image), name="image column")
    except BadRow:
        raise
    except OFAError as e:
        msg = str(e)
        raise BadRow(msg if msg.startswith(where) else f"{where}: {msg}", "image") from None


class SampleBuilder:
    """Turns records of one task into samples. Build one with :func:`make_builder`."""

    def __init__(self, layout: TaskLayout, tokenizer: OFATokenizer, *, split: str = "train",
                 patch_image_size: int | None = None, max_src_length: int | None = None,
                 max_tgt_length: int | None = None, prompt_type: str | None = None,
                 add_object: bool | None = None, max_object_length: int | None = None,
                 add_caption: bool | None = None, imagenet_default_mean_and_std: bool | None = None,
                 scst: bool = False, noise_ratio: float | None = None, num_bins: int | None = None,
                 max_image_size: int | None = None, train_augment: bool = True,
                 image_transform: Callable | None = None, ans2label_file: str | Path | None = None,
                 ans2label_dict: Sequence[str] | dict | None = None, neg_sample_dir: str | Path | None = None,
                 mask_ratio: float = 0.3, poisson_lambda: float = 3.0, random_ratio: float = 0.0,
                 attend_box: bool = True, image_cache=None, object_order: str = "file"):
        if split not in ("train", "valid", "test"):
            raise OFAError(f"split must be 'train', 'valid' or 'test', got {split!r}")
        s = layout.settings
        self.layout = layout
        self.task = layout.task
        #: the registered task whose samples these rows make (None: a pretraining file)
        self.task_def = task_of_layout(layout) if layout.owner is not None else None
        self.tok = tokenizer
        self.split = split
        self.train = split == "train"
        self.patch_image_size = int(patch_image_size or layout.patch_image_size or 0) or None
        if layout.image and self.patch_image_size is None:
            raise OFAError(f"task {layout.task} needs a patch_image_size")
        self.max_src_length = int(max_src_length or layout.max_src_length)
        self.max_tgt_length = int(max_tgt_length or layout.max_tgt_length)
        self.prompt_type = prompt_type or s.get("prompt_type", "none")
        if self.prompt_type not in PROMPT_TYPES:
            raise OFAError(f"prompt_type must be one of {', '.join(PROMPT_TYPES)}, got {self.prompt_type!r}")
        self.add_object = s.get("add_object", False) if add_object is None else add_object
        self.image_cache = image_cache  # DecodedImages: decoded image files kept in memory
        if object_order not in ("file", "position"):
            raise OFAError(f"object_order must be 'file' or 'position', got {object_order!r}")
        self.object_order = object_order  # detect: the order of a row's objects in the target
        self.attend_box = bool(attend_box)  # VQA: a row's box goes to the batch (box_attention_weight)
        self.max_object_length = int(max_object_length or s.get("max_object_length", 30))
        # None: use the premise when the row has one (always, with the original's TSV layout)
        self.add_caption = add_caption
        imagenet = s.get("imagenet_default_mean_and_std", False) if imagenet_default_mean_and_std is None \
            else imagenet_default_mean_and_std
        self.mean, self.std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (OFA_MEAN, OFA_STD)
        self.scst = scst
        self.noise_ratio = float(s.get("noise_ratio", 0.0) if noise_ratio is None else noise_ratio)
        self.num_bins = int(num_bins or s.get("num_bins", tokenizer.num_bins))
        self.max_image_size = int(max_image_size or s.get("max_image_size", 512))
        self.image_transform = image_transform
        # random training-time augmentation of the tasks whose original training has it
        # (classification; the pretraining files); never outside the training split
        self.augment = self.train and bool(train_augment)
        if image_transform is None and self.task_def is not None:
            self.image_transform = self.task_def.train_transform(self)
        if image_transform is None and self.task == "pretrain_vl" and self.augment:
            from openofa.data.augment import PretrainPairTransform

            self.image_transform = PretrainPairTransform(self.patch_image_size, self.mean, self.std)
        self.zh = tokenizer.language == "zh"
        self.bos, self.eos, self.pad = tokenizer.bos, tokenizer.eos, tokenizer.pad
        # pretraining: negatives for image-text matching, text infilling
        self.negatives = None
        if neg_sample_dir is not None:
            if self.task != "pretrain_vl":
                raise OFAError(f"neg_sample_dir applies to pretrain_vl, not to task {self.task}")
            from openofa.data.pretrain import load_negatives

            self.negatives = load_negatives(str(neg_sample_dir))
        self.infilling = None
        if self.task == "pretrain_text":
            from openofa.data.pretrain import TextInfilling

            self.infilling = TextInfilling(tokenizer, mask_ratio, poisson_lambda, random_ratio)
        self.candidates = None
        if ans2label_file is not None or ans2label_dict is not None:
            from openofa.data.answers import candidates_from_option

            if ans2label_file is not None and ans2label_dict is not None:
                raise OFAError("give ans2label_file or ans2label_dict, not both")
            if self.task_def is None or not self.task_def.candidates:
                from openofa.tasks import TASKS

                allowed = [t for t, cls in TASKS.items() if cls.candidates]
                raise OFAError(f"a candidate answer list (ans2label_file / ans2label_dict) applies to "
                               f"{', '.join(allowed)}, not to task {self.task}")
            self.candidates = candidates_from_option(ans2label_file if ans2label_file is not None
                                                     else ans2label_dict, tokenizer)

    # -- helpers --------------------------------------------------------------------------

    def encode(self, text: str, length: int | None = None) -> list[int]:
        return self.tok.encode(text, length=length)

    def load_image(self, record: Record):
        return load_record_image(record, self.image_cache)

    def patch_image(self, record: Record) -> torch.Tensor:
        return self.patch_of(self.load_image(record))

    def patch_of(self, img) -> torch.Tensor:
        """The model's input tensor of a loaded image (the task's transform, or a plain resize)."""
        from openofa.vision.transforms import to_tensor_normalized

        if self.image_transform is not None:
            return self.image_transform(img)
        size = self.patch_image_size
        if img.size != (size, size):
            img = img.resize((size, size), _bicubic())
        return to_tensor_normalized(img, self.mean, self.std)

    def with_prompt(self, src: list[int], tgt: list[int], *, eos: bool = True) -> dict[str, Any]:
        """prev_output / target / prefix for the prompt types of VQA, SNLI-VE (eos=True) and
        GLUE (eos=False: the target is the label token only)."""
        pt = self.prompt_type
        if eos:
            if pt == "none":
                prev, prefix = [self.bos] + tgt, []
            elif pt == "src":
                prev, prefix = src + tgt, src[1:]
            else:
                prev, prefix = src[:-1] + tgt, src[1:-1]
            target = prev[1:] + [self.eos]
            n_pad = len(target) - len(tgt) - 1
        else:
            if pt == "none":
                prev, target, prefix = [self.bos], list(tgt), []
            elif pt == "src":
                prev, prefix = list(src), src[1:]
                target = prev[1:] + tgt
            else:
                prev, prefix = src[:-1], src[1:-1]
                target = prev[1:] + tgt
            n_pad = len(target) - 1
        target = [self.pad] * n_pad + target[n_pad:]
        return {"prev_output_tokens": _long(prev), "target": _long(target), "prefix": _long(prefix)}

    def sample(self, record: Record, src: list[int], tgt: list[int], image=None, **extra) -> dict[str, Any]:
        sample = {
            "id": record.id,
            "source": _long(src),
            "target": _long(tgt + [self.eos]),
            "prev_output_tokens": _long([self.bos] + tgt),
            "prefix": _long([]),
            "patch_image": image,
            "patch_mask": image is not None,
            "ref": self.task_def.reference(record) if self.task_def is not None else record.label,
            "where": record.where,
        }
        sample.update(extra)
        return sample

    def __call__(self, record: Record) -> dict[str, Any]:
        if self.task_def is not None:
            sample = self.task_def.sample(self, record)
        else:
            sample = self.layout.build(self, record)
        if self.candidates is not None:
            sample["constraint_mask"] = self.candidates.target_mask(sample["target"], record.where)
        return sample  # a list of samples for pretrain_vl rows (the collater flattens it)

    # -- helpers of the tasks' sample builders ----------------------------------------------

    def resized_box(self, r: Record, size: tuple[int, int]) -> torch.Tensor:
        """``r.box`` in the pixels of the plainly resized patch image (a box outside the image
        of ``size`` (width, height) is a bad row)."""
        from openofa.text.locations import scale_box

        self._check_box(r, size)
        w, h = size
        return scale_box(torch.tensor(r.box, dtype=torch.float32), self.patch_image_size / w, self.patch_image_size / h)

    def load_boxed_image(self, r: Record):
        """The row's image, after checking that its box lies inside it (else a bad row)."""
        img = self.load_image(r)
        self._check_box(r, img.size)
        return img

    @staticmethod
    def _check_box(r: Record, size: tuple[int, int]) -> None:
        """A box outside an image of ``size`` (width, height) makes the row a bad row."""
        from openofa.vision.boxes import validate_box

        try:
            validate_box(r.box, size[0], size[1], name=r.where)
        except OFAError as e:
            raise BadRow(str(e), "box") from None

    def box_ids(self, r: Record, box) -> list[int]:
        """Four location-token ids of ``box`` (pixels of the transformed image)."""
        from openofa.text.locations import box_to_ids

        try:
            ids = box_to_ids(box, vocab_size=len(self.tok), num_bins=self.num_bins,
                             max_image_size=self.max_image_size)
        except OFAError as e:
            raise BadRow(f"{r.where}: {e}", "box") from None
        return [int(i) for i in ids]

    def box_image(self, r: Record):
        """The row's image resized as RefCOCO does, and its box as four location-token ids:
        ``(refcoco_transform output, ids)``. A box outside the image is a bad row."""
        from openofa.vision.transforms import refcoco_transform

        img = self.load_boxed_image(r)
        size = self.patch_image_size
        out = refcoco_transform(img, r.box, size=size, max_size=size, mean=self.mean, std=self.std)
        return out, self.box_ids(r, out.box)


def _bicubic():
    from PIL import Image

    return Image.Resampling.BICUBIC


def make_builder(task: str, tokenizer: OFATokenizer | str | None = None, **options) -> SampleBuilder:
    """A :class:`SampleBuilder` for ``task`` (options: see :func:`~openofa.data.build_dataset`)."""
    layout = get_layout(task)
    if tokenizer is None or isinstance(tokenizer, str):
        tokenizer = OFATokenizer.from_language(tokenizer or "en")
    return SampleBuilder(layout, tokenizer, **options)
