"""Samples of the original's four pretraining files, built as its ``UnifyDataset`` builds them.

=====================  =======================================================================
file (task)            samples of one row
=====================  =======================================================================
``pretrain_vl``        ``type`` caption: " what does the image describe?" -> the caption; qa:
                       the question -> the most confident answer (``conf`` its confidence);
                       visual_grounding: ' which region does the text " ... " describe?' -> the
                       box as four location tokens, *plus* grounded captioning: '  what does the
                       region describe? region:' + the box tokens -> the text. Training rows of
                       type caption / qa also give an image-text matching sample (' does the image
                       describe " ... "?' or ' what is the answer to question " q ". is " a "?'
                       -> " yes" for the row's own text with probability 1/2, else " no" for a
                       negative one), when ``neg_sample_dir`` is given
``pretrain_text``      text infilling: the lower-cased text (first 512 tokens, then the last 256),
                       BART whole-word span masking (``mask_ratio`` 0.3 of the words, Poisson(3)
                       span lengths, each span replaced by one ``<mask>``) inside ' what is the
                       complete text of " "?' -> the whole text; no image; ``conf`` 2
``pretrain_image``     image infilling: the image with its centre half blanked (zero after
                       normalisation) + " what is the image in the middle part?" -> the VQGAN
                       codes of the centre as ``<code_k>`` tokens; ``code_mask`` True; ``conf`` 2
``pretrain_detection`` " what are the objects in the image?" -> for every box its four location
                       tokens and its label's words; ``conf`` 2
=====================  =======================================================================

A ``pretrain_vl`` row gives a list of samples (one or two); the collater flattens them, as the
original's collater does. ``conf`` multiplies the log-probabilities in the loss (the original's
weighting: 2 for the text, image and detection samples).

Negative samples (``neg_sample_dir``, the original's ``--neg-sample-dir``): ``object.txt`` (object
names, one per line), ``all_captions.txt`` (captions, one per line) and ``type2ans.json``
(``{question type: [answers]}``, with an ``"other"`` list). A negative caption replaces one of the
row's ground-truth objects by a random other object (probability 0.4, when the row has objects)
or is a random caption; a negative answer is a random answer of the answer's type (of ``other``
when the answer has no type or is not confident), or for ``how many`` numbers one more or less.

Images: in training (``train_augment``, on by default in the training split) the original's
random augmentation (:mod:`openofa.data.augment`): image-text pairs get a random resize, a centre
crop and ``RandomAugment``; grounding rows a random resize and a crop centred on the box;
detection rows a random horizontal flip and large-scale jitter (a crop may drop boxes, or all of
them: the target is then eos alone, as in the original). Otherwise (evaluation splits,
``train_augment: false``) images are resized to ``patch_image_size`` square, boxes with them.
Where this differs from the original: every file's images come out at ``patch_image_size``
(the original's detection and image-infilling images are always 256), the original's
evaluation split augments pairs too, and an image-infilling image that is not
``patch_image_size`` square is resized to it (the codes describe its centre half either way).
Randomness (masks, negatives, augmentation) comes from Python's and torch's global generators,
which the trainer seeds per example, so runs and resumes repeat exactly.
"""

from __future__ import annotations

import json
import math
import random
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from openofa.data.records import BadRow, Record
from openofa.errors import OFAError
from openofa.tasks import caption, detect, entailment, grounding
from openofa.tasks.base import layout
from openofa.tasks.detect import detection_objects
from openofa.text.tokenizer import pre_caption, pre_question

if TYPE_CHECKING:  # pragma: no cover
    from openofa.data.samples import SampleBuilder

__all__ = ["NegativeSamples", "load_negatives", "TextInfilling", "word_starts", "vision_language",
           "text_infilling", "image_infilling", "detection", "detection_objects", "PRETRAIN_PROMPTS"]

PRETRAIN_PROMPTS = {
    "caption": caption.PROMPT,
    "caption_match": entailment.PROMPT,
    "qa_match": ' what is the answer to question " {} ". is " {} "?',
    "grounding": grounding.PROMPT,
    "region": "  what does the region describe? region:",  # two spaces, as the original
    "text": ' what is the complete text of " "?',
    "image": " what is the image in the middle part?",
    "detection": detect.PROMPT,
}


# ---- negative samples for image-text matching ---------------------------------------------------
class NegativeSamples:
    """Objects, captions and answers by question type to draw negatives from."""

    def __init__(self, objects: list[str], captions: list[str], type2ans: dict[str, list[str]]) -> None:
        self.objects, self.captions, self.type2ans = objects, captions, type2ans
        self.ans2type = {a: kind for kind, answers in type2ans.items() for a in answers}

    @classmethod
    def load(cls, folder: str | Path) -> "NegativeSamples":
        folder = Path(folder)
        if not folder.is_dir():
            raise OFAError(f"neg_sample_dir: no such folder: {folder}")

        def lines(name: str) -> list[str]:
            path = folder / name
            if not path.is_file():
                raise OFAError(f"neg_sample_dir: missing {path}")
            out = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(out) < 2:
                raise OFAError(f"{path}: need at least two entries, found {len(out)}")
            return out

        objects, captions = lines("object.txt"), lines("all_captions.txt")
        path = folder / "type2ans.json"
        if not path.is_file():
            raise OFAError(f"neg_sample_dir: missing {path}")
        try:
            type2ans = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise OFAError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(type2ans, dict) or not all(
                isinstance(v, list) and len(v) >= 2 and all(isinstance(a, str) for a in v) for v in type2ans.values()):
            raise OFAError(f"{path}: expected {{question type: [at least two answers]}}")
        if "other" not in type2ans:
            raise OFAError(f"{path}: needs an 'other' list (answers of no particular type)")
        return cls(objects, captions, type2ans)

    @staticmethod
    def _other_than(choices: list[str], avoid: str) -> str:
        pick = random.choice(choices[:-1])
        return choices[-1] if pick == avoid else pick

    def caption(self, caption: str, objects: list[str] | None) -> str:
        if objects and random.random() > 0.6:
            gt = random.choice(objects)
            return caption.replace(gt, self._other_than(self.objects, gt))
        return random.choice(self.captions)

    def answer(self, answer: str, conf: float) -> str:
        p = random.random()
        if conf > p + 0.1 and answer in self.ans2type:
            kind = self.ans2type[answer]
            if kind == "how many" and answer.isdigit() and p > 0.5:
                return str(int(answer) + random.choice([-1, 1]))
            return self._other_than(self.type2ans[kind], answer)
        return self._other_than(self.type2ans["other"], answer)


@lru_cache(maxsize=4)
def load_negatives(folder: str) -> NegativeSamples:
    """The negatives of a folder, read once per process."""
    return NegativeSamples.load(folder)


# ---- text infilling -------------------------------------------------------------------------------
def word_starts(tokenizer) -> torch.Tensor:
    """bool (vocab,): whether each token begins a word, as the original's whole-word masking
    decides (GPT-2 pieces with a leading space; every special, ``madeupword``, ``<mask>``, code
    and location token; Chinese: every wordpiece not starting with ``##``)."""
    return _word_starts(tokenizer)


@lru_cache(maxsize=4)
def _word_starts(tokenizer) -> torch.Tensor:
    d = tokenizer.dictionary
    out = torch.ones(len(tokenizer), dtype=torch.bool)
    for i in range(d.nspecial, min(len(tokenizer), d.mask_index)):
        sym = d.symbol(i)
        if tokenizer.language == "en":
            out[i] = sym.startswith("madeupword") or tokenizer.decode([i]).startswith(" ")
        else:
            out[i] = not sym.startswith("##")
    return out


def _poisson_probs(lam: float) -> torch.Tensor:
    probs, term = [], math.exp(-lam)
    for k in range(128):
        probs.append(term)
        term *= lam / (k + 1)
        if probs[-1] < 1e-7:
            break
    return torch.tensor(probs)


class TextInfilling:
    """BART's whole-word span masking as the original configures it (``replace_length`` 1: a
    span of words becomes one ``<mask>``; zero-length spans insert a ``<mask>``)."""

    def __init__(self, tokenizer, mask_ratio: float = 0.3, poisson_lambda: float = 3.0,
                 random_ratio: float = 0.0) -> None:
        if not 0.0 <= mask_ratio <= 1.0:
            raise OFAError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
        if poisson_lambda <= 0:
            raise OFAError(f"poisson_lambda must be > 0, got {poisson_lambda}")
        if not 0.0 <= random_ratio <= 1.0:
            raise OFAError(f"random_ratio must be in [0, 1], got {random_ratio}")
        self.ratio, self.random_ratio = mask_ratio, random_ratio
        self.starts = word_starts(tokenizer)
        self.mask = tokenizer.mask
        # random replacements are text tokens (neither codes nor location tokens)
        self.random_high = len(tokenizer) - tokenizer.dictionary.code_dict_size - tokenizer.num_bins
        self.span_lengths = torch.distributions.Categorical(probs=_poisson_probs(poisson_lambda))

    def _noise_token(self) -> int:
        if self.random_ratio and float(torch.rand(())) < self.random_ratio:
            return int(torch.randint(4, self.random_high, ()))
        return self.mask

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` = bos + text + eos; the first and last token are never masked."""
        n_tok = tokens.numel()
        is_start = self.starts[tokens].clone()
        is_start[0] = is_start[-1] = False
        candidates = is_start.nonzero().flatten()
        budget = math.ceil(int(is_start.sum()) * self.ratio)
        if budget == 0:
            return tokens
        lengths = self.span_lengths.sample((budget,))
        while int(lengths.sum()) < budget:
            lengths = torch.cat([lengths, self.span_lengths.sample((budget,))])
        # trim: the spans cover exactly `budget` words, the last one shortened
        total, spans = 0, []
        for length in lengths.tolist():
            if total + length >= budget:
                spans.append(budget - total)
                break
            spans.append(length)
            total += length
        inserts = sum(1 for s in spans if s == 0)
        spans = [s for s in spans if s > 0]
        out = tokens.clone()
        keep = torch.ones(n_tok, dtype=torch.bool)
        chosen = candidates[torch.randperm(candidates.numel())[: len(spans)]].tolist()
        for start, words in zip(chosen, spans):
            out[start] = self._noise_token()
            left, j = words - 1, start + 1
            while j < n_tok - 1:  # the span covers `words` words, never the final eos
                if is_start[j]:
                    if left == 0:
                        break
                    left -= 1
                keep[j] = False
                j += 1
        out = out[keep]
        if inserts:
            out = self._insert(out, inserts)
        return out

    def _insert(self, tokens: torch.Tensor, n: int) -> torch.Tensor:
        size = tokens.numel() + n
        where = torch.randperm(size - 2)[:n] + 1  # never before bos or after eos
        noise = torch.zeros(size, dtype=torch.bool)
        noise[where] = True
        out = torch.empty(size, dtype=torch.long)
        out[~noise] = tokens
        out[noise] = torch.tensor([self._noise_token() for _ in range(n)], dtype=torch.long)
        return out


# ---- the four files -------------------------------------------------------------------------------------
def _answer_ids(b: "SampleBuilder", word: str) -> list[int]:
    return b.encode(" " + word)


def _variant(b: "SampleBuilder", sample: dict, src: list[int], tgt: list[int]) -> dict:
    """Another sample of the same row and image: new source and target."""
    out = dict(sample)
    out.update(source=torch.tensor(src, dtype=torch.long), target=torch.tensor(tgt + [b.eos], dtype=torch.long),
               prev_output_tokens=torch.tensor([b.bos] + tgt, dtype=torch.long),
               prefix=torch.zeros(0, dtype=torch.long))
    return out


def _grounding(b: "SampleBuilder", r: Record) -> tuple[torch.Tensor, list[int]]:
    if not b.augment:
        out, ids = b.box_image(r)
        return out.patch_image, ids
    from openofa.data.augment import PRETRAIN_MAX_SIZE, object_center_crop, pretrain_scales, random_resize
    from openofa.vision.transforms import to_tensor_normalized

    s = b.patch_image_size
    img, boxes = random_resize(b.load_boxed_image(r), [r.box], pretrain_scales(s), PRETRAIN_MAX_SIZE)
    img, boxes = object_center_crop(img, boxes, s)
    return to_tensor_normalized(img, b.mean, b.std), b.box_ids(r, boxes[0])


def vision_language(b: "SampleBuilder", r: Record, negatives: NegativeSamples | None) -> list[dict[str, Any]]:
    """The samples of one image-text pair row (see the module doc)."""
    kind = r.extra.get("type")
    bos, eos = b.bos, b.eos
    if kind == "caption":
        if not r.text or not r.text.strip():
            raise BadRow(f"{r.where}: empty caption", "text")
        image = b.patch_image(r)
        src = [bos] + b.encode(PRETRAIN_PROMPTS["caption"]) + [eos]
        sample = b.sample(r, src, b.encode(" " + pre_caption(r.text, b.max_tgt_length)), image, conf=1.0)
        if r.extra.get("dataset") == "cc12m":  # the original leaves out the first two target tokens
            sample["target"][:2] = b.pad
        samples = [sample]
        if b.train and negatives is not None:
            if random.random() >= 0.5:
                text, answer = r.text, "yes"
            else:
                text, answer = negatives.caption(r.text, r.objects), "no"
            prompt = PRETRAIN_PROMPTS["caption_match"].format(pre_caption(text, b.max_src_length))
            samples.append(_variant(b, sample, [bos] + b.encode(prompt) + [eos], _answer_ids(b, answer)))
        return samples
    if kind == "qa":
        if not r.text2 or not r.text2.strip():
            raise BadRow(f"{r.where}: empty question", "text")
        image = b.patch_image(r)
        question = pre_question(r.text2, b.max_src_length)
        answers = r.answers or {}
        answer = max(answers, key=answers.get)
        conf = float(answers[answer])
        src = [bos] + b.encode(" " + question) + [eos]
        sample = b.sample(r, src, b.encode(" " + answer), image, conf=conf)
        samples = [sample]
        if b.train and negatives is not None:
            if random.random() >= 0.5:
                shown, word = answer, "yes"
            else:
                shown, word = negatives.answer(answer, conf), "no"
            prompt = PRETRAIN_PROMPTS["qa_match"].format(question, shown)
            samples.append(_variant(b, sample, [bos] + b.encode(prompt) + [eos], _answer_ids(b, word)))
        return samples
    # visual_grounding (the record reader accepts no other type)
    if not r.text or not r.text.strip():
        raise BadRow(f"{r.where}: empty text of the region", "text")
    image, box_ids = _grounding(b, r)
    prompt = PRETRAIN_PROMPTS["grounding"].format(pre_caption(r.text, b.max_src_length))
    sample = b.sample(r, [bos] + b.encode(prompt) + [eos], box_ids, image, conf=1.0)
    region_src = [bos] + b.encode(PRETRAIN_PROMPTS["region"]) + box_ids + [eos]
    region = _variant(b, sample, region_src, b.encode(" " + pre_caption(r.text, b.max_tgt_length)))
    return [sample, region]


def text_infilling(b: "SampleBuilder", r: Record, infill: TextInfilling) -> dict[str, Any]:
    text = (r.text or "").strip().lower()
    if not text:
        raise BadRow(f"{r.where}: empty text", "text")
    ids = b.encode(" " + text, length=512)[-256:]
    masked = infill(torch.tensor([b.bos] + ids + [b.eos], dtype=torch.long)).tolist()
    prefix = b.encode(PRETRAIN_PROMPTS["text"])
    src = [b.bos] + prefix[:-2] + masked[1:-1] + prefix[-2:] + [b.eos]
    return b.sample(r, src, ids, None, conf=2.0)


def image_infilling(b: "SampleBuilder", r: Record) -> dict[str, Any]:
    codes = r.extra.get("code") or []
    size = b.tok.dictionary.code_dict_size
    bad = [c for c in codes if not 0 <= c < size]
    if not codes or bad:
        what = "no image codes" if not codes else f"image code {bad[0]} is outside 0..{size - 1}"
        raise BadRow(f"{r.where}: {what}", "field")
    image = b.patch_image(r)
    s = image.shape[-1]
    image[:, s // 4: s // 4 + s // 2, s // 4: s // 4 + s // 2] = 0.0
    first_code = len(b.tok) - size - b.num_bins
    src = [b.bos] + b.encode(PRETRAIN_PROMPTS["image"]) + [b.eos]
    return b.sample(r, src, [first_code + c for c in codes], image, conf=2.0, code_mask=True)


def detection(b: "SampleBuilder", r: Record) -> dict[str, Any]:
    """A detection row's sample: the ``detect`` task's, weighted 2 as in the original's pretraining."""
    sample = detect.Detect().sample(b, r)
    sample["conf"] = 2.0
    return sample


# ---- the four files' layouts ------------------------------------------------------------------------
def _read_text(rec: Record, fields: dict, where: str, targets: bool = True) -> None:
    from openofa.data.records import field_str

    rec.text = field_str(fields, "text", where)


def _read_codes(rec: Record, fields: dict, where: str, targets: bool = True) -> None:
    from openofa.data.records import field_required

    code = field_required(fields, "code", where)
    try:
        codes = [int(c) for c in code.split()] if isinstance(code, str) else [int(c) for c in code]
    except (TypeError, ValueError):
        raise BadRow(f"{where}: image code must be space-separated integers", "field") from None
    rec.extra["code"] = codes


def _build_vl(b: "SampleBuilder", r: Record):
    return vision_language(b, r, b.negatives)


def _build_text(b: "SampleBuilder", r: Record):
    return text_infilling(b, r, b.infilling)


def _pretrain_layouts() -> dict:
    from dataclasses import replace

    from openofa.data.records import read_pretrain_vl

    return {
        "pretrain_vl": layout("pretrain_vl", ["id", "image", "caption", "question", "answers", "objects", "dataset",
                                              "type"], [0, 1, 2, 3, 4, 5, 6, 7], patch_image_size=384,
                              max_src_length=80, max_tgt_length=30, read=read_pretrain_vl, build=_build_vl,
                              aliases=("vision_language",),
                              doc="uniq-id, image, caption, question, answer (conf|!+ans&&... for qa, "
                                  "x1,y1,x2,y2 for visual_grounding), ground-truth objects a&&b, dataset "
                                  "name, type caption|qa|visual_grounding"),
        "pretrain_text": layout("pretrain_text", ["id", "text"], [0, 1], image=False, patch_image_size=None,
                                read=_read_text, build=_build_text, aliases=("text",), doc="uniq-id, text"),
        "pretrain_image": layout("pretrain_image", ["id", "image", "code"], [0, 1, 2], patch_image_size=256,
                                 read=_read_codes, build=image_infilling, aliases=("image",),
                                 doc="image-id, image (256x256), VQGAN codes of the centre (space-separated ints)"),
        # the detect task's file, weighted as pretraining weights it
        "pretrain_detection": replace(detect.Detect.layouts[0], task="pretrain_detection", owner=None,
                                      build=detection, aliases=("detection",)),
    }


#: the original's four pretraining files (their rows make samples of several tasks)
PRETRAIN_LAYOUTS = _pretrain_layouts()
