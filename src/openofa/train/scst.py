"""Self-critical sequence training (SCST): the CIDEr optimisation of the original's caption stage 2
(its ``scst_reward_criterion``).

For every image of a micro-batch:

1. the model, switched to eval mode, decodes ``N`` captions with the shared generator
   (:mod:`openofa.generation`; the original's ``--scst-args``: beam 5, ``max_len_b`` 16,
   ``no_repeat_ngram_size`` 3, and all 5 finished beams are kept; ``sampling: true`` draws ``N``
   samples instead);
2. each caption gets a reward, its CIDEr-D against the image's reference captions
   (:class:`CiderReward`);
3. the baseline of a caption is the mean reward of the *other* captions of its image (the
   original's leave-one-out mean, which is ``N / (N - 1)`` times the deviation from the group
   mean), and the advantage is ``reward - baseline``;
4. the model, back in training mode, is run teacher-forced on the captions (``[bos] +`` caption as
   decoder input, caption + eos as target), and the loss is
   ``-sum_captions advantage * sum_tokens log p(token)``. As in the original the sample size is the
   number of caption tokens (eos included), so the update's gradient is divided by the tokens of
   all captions of all micro-batches and processes, like the cross-entropy's.

Rewards follow the original exactly: a caption (generated or reference) has its punctuation
removed and ``" <eos>"`` appended before the n-grams are counted, because the original's cached
document frequencies were counted that way. Document frequencies (``scst.cider_df``):

* ``corpus`` (default): counted once over the reference captions of the training file, one
  document per row (the original's ``coco-train-words.p`` is the same count over the COCO
  training images, so a file with one row per image and all its references, like the original's
  ``caption_stage2_train.tsv``, gives the original's rewards);
* ``batch``: counted over the images of each micro-batch (coco-caption's own behaviour; noisy
  with small batches, and zero rewards for a single image);
* a path to the original's cached file (``cider_cached_tokens/coco-train-words.p``), read with an
  unpickler that accepts only plain data.
"""

from __future__ import annotations

import io
import pickle
import string
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from openofa.errors import OFAError
from openofa.generation import GenerationConfig, SequenceGenerator, TokenRange
from openofa.metrics.caption import cider_d, document_frequencies
from openofa.train.distributed import unwrap
from openofa.train.loss import LossOutput

__all__ = ["DEFAULT_SCST", "CiderReward", "reward_text", "leave_one_out_advantages", "SelfCriticalCriterion"]

#: the original's --scst-args for captioning, in GenerationConfig names
DEFAULT_SCST = {"beam_size": 5, "max_len_a": 0, "max_len_b": 16, "no_repeat_ngram_size": 3}
#: keys of the recipe's ``scst`` mapping besides the GenerationConfig fields
SCST_KEYS = ("cider_df",)

_NO_PUNCT = str.maketrans({c: None for c in string.punctuation})


def reward_text(caption: str) -> str:
    """A caption as the reward counts it: punctuation removed, ``" <eos>"`` appended."""
    return caption.strip().translate(_NO_PUNCT).strip() + " <eos>"


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only; ``collections.defaultdict`` (of float or int) is the one class allowed,
    because the original's cached document frequencies are one."""

    _ALLOWED = {("collections", "defaultdict"), ("builtins", "float"), ("builtins", "int"),
                ("__builtin__", "float"), ("__builtin__", "int")}

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle hook
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


class CiderReward:
    """CIDEr-D rewards of generated captions. ``df`` / ``num_docs``: document frequencies of
    n-grams (tuples of words) and the number of documents they were counted over; ``None`` counts
    them over the images of each call instead."""

    def __init__(self, df: Mapping[tuple, float] | None = None, num_docs: float | None = None) -> None:
        if (df is None) != (num_docs is None):
            raise OFAError("CiderReward: give both df and num_docs, or neither")
        if num_docs is not None and num_docs < 1:
            raise OFAError(f"CiderReward: num_docs must be >= 1, got {num_docs}")
        self.df, self.num_docs = df, num_docs

    @classmethod
    def from_references(cls, refs_per_image: Sequence[Sequence[str]]) -> "CiderReward":
        """Document frequencies of a corpus: one document per entry of ``refs_per_image``."""
        refs = [[reward_text(r) for r in rs] for rs in refs_per_image if rs]
        if not refs:
            raise OFAError("scst: no reference captions to count document frequencies over")
        return cls(document_frequencies(refs), float(len(refs)))

    @classmethod
    def from_file(cls, path: str | Path) -> "CiderReward":
        """The original's cached document frequencies (``{"document_frequency": {ngram: count},
        "ref_len": number of images}``, a Python 2 pickle)."""
        path = Path(path)
        if not path.is_file():
            raise OFAError(f"scst.cider_df: no such file: {path}")
        try:
            obj = _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
                AttributeError) as e:
            raise OFAError(f"{path}: not a cached CIDEr document-frequency file ({e})") from None
        if not isinstance(obj, Mapping) or "document_frequency" not in obj or "ref_len" not in obj:
            raise OFAError(f"{path}: expected a dict with 'document_frequency' and 'ref_len'")
        df = obj["document_frequency"]
        if not isinstance(df, Mapping) or not all(isinstance(k, tuple) for k in list(df)[:100]):
            raise OFAError(f"{path}: 'document_frequency' must map n-gram tuples to counts")
        try:
            num_docs = float(obj["ref_len"])
        except (TypeError, ValueError):
            raise OFAError(f"{path}: 'ref_len' must be a number, got {obj['ref_len']!r}") from None
        return cls(dict(df), num_docs)

    def __call__(self, captions: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> list[list[float]]:
        """Rewards of ``captions[i][j]`` (caption ``j`` of image ``i``) against ``refs[i]``."""
        if len(captions) != len(refs):
            raise OFAError(f"scst: {len(captions)} groups of captions but {len(refs)} reference lists")
        wrapped = [[reward_text(r) for r in rs] for rs in refs]
        for i, rs in enumerate(wrapped):
            if not rs:
                raise OFAError(f"scst: image {i} of the batch has no reference caption")
        flat_hyps = [reward_text(c) for group in captions for c in group]
        flat_refs = [wrapped[i] for i, group in enumerate(captions) for _ in group]
        if not flat_hyps:
            return [[] for _ in captions]
        if self.df is None:
            df, num_docs = document_frequencies(wrapped), float(len(wrapped))
        else:
            df, num_docs = self.df, self.num_docs
        _, scores = cider_d(flat_refs, flat_hyps, df=df, num_docs=num_docs)
        out, i = [], 0
        for group in captions:
            out.append(scores[i:i + len(group)])
            i += len(group)
        return out


def self_critical_loss(tok_lp: torch.Tensor, target: torch.Tensor, rewards: Sequence[Sequence[float]],
                       pad: int) -> LossOutput:
    """The policy-gradient loss of sampled sequences: each one's token log-probabilities
    ``tok_lp`` (N, T) weighted by its leave-one-out advantage (rows in the order of ``rewards``,
    grouped per input), with the summed reward logged."""
    advantages = leave_one_out_advantages(rewards)
    adv = torch.tensor([a for g in advantages for a in g], dtype=tok_lp.dtype, device=tok_lp.device)
    loss = -(tok_lp * adv.unsqueeze(1)).sum()
    ntokens = int(target.ne(pad).sum())
    return LossOutput(loss=loss, nll_loss=-tok_lp.detach().sum(), sample_size=ntokens, ntokens=ntokens,
                      nsentences=int(target.shape[0]), sums={"reward": float(sum(r for g in rewards for r in g))})


def leave_one_out_advantages(rewards: Sequence[Sequence[float]]) -> list[list[float]]:
    """``reward - mean of the other rewards of the same image``, per image; an image with a single
    caption has no baseline and gets advantage 0."""
    out = []
    for group in rewards:
        n = len(group)
        if n < 2:
            out.append([0.0] * n)
            continue
        total = float(sum(group))
        out.append([float(r) - (total - float(r)) / (n - 1) for r in group])
    return out


def references_of(dataset: Any) -> list[list[str]]:
    """The reference captions of every row of a caption dataset of :mod:`openofa.data` (several
    files: all of them), for the corpus document frequencies."""
    parts = getattr(dataset, "parts", None) or [dataset]
    refs: list[list[str]] = []
    for part in parts:
        if not hasattr(part, "references") or getattr(part, "task", None) != "caption":
            raise OFAError("scst.cider_df: corpus needs the training data of task caption from openofa.data; "
                           "use cider_df: batch or the original's cached file instead")
        refs.extend(list(r) for r in part.references().values())
    return refs


class SelfCriticalCriterion:
    """``criterion(model, batch, update_num) -> LossOutput`` (see the module doc). Unlike the
    cross-entropy, it runs the model itself (generation, then the teacher-forced pass), so the
    trainer hands it the (possibly DDP-wrapped) model instead of logits.

    ``batch`` follows the collater contract and must carry ``ref`` (the reference captions of each
    image, as caption samples do)."""

    runs_model = True
    #: per-sentence sums in ``LossOutput.sums``; the trainer logs them as means per caption
    log_keys = ("reward",)
    #: the sampled outputs are image codes (the decoder's code mode; text-to-image stage 2)
    code_outputs = False

    def __init__(self, generation: GenerationConfig | Mapping[str, Any] | None = None,
                 reward: CiderReward | None = None, *, pad: int = 1, bos: int = 0, eos: int = 2,
                 language: str = "en", constraint_range: Any = None, tokenizer: Any = None) -> None:
        if generation is None or isinstance(generation, Mapping):
            options = {**DEFAULT_SCST, **dict(generation or {})}
            known = set(GenerationConfig.__dataclass_fields__)
            bad = sorted(set(options) - known)
            if bad:
                raise OFAError(f"scst: unknown generation option(s) {', '.join(bad)}")
            generation = GenerationConfig(**options)
        self.generator = SequenceGenerator(generation)
        self.reward = reward if reward is not None else CiderReward()
        self.pad, self.bos, self.eos = pad, bos, eos
        self.constraint_range = TokenRange.parse(constraint_range) if constraint_range else None
        from openofa.text.tokenizer import OFATokenizer

        self.tokenizer = tokenizer if tokenizer is not None else OFATokenizer.from_language(language)

    @classmethod
    def from_config(cls, cfg, model_config, train_data: Any) -> "SelfCriticalCriterion":
        """Built from a recipe: ``scst`` holds GenerationConfig options and ``cider_df``."""
        from openofa.data.layouts import canonical_task
        from openofa.text.tokenizer import OFATokenizer

        if cfg.task in ("synthetic", "mixture") or canonical_task(cfg.task) != "caption":
            raise OFAError(f"criterion scst optimises captions against their references: it needs task caption, "
                           f"not {cfg.task}")
        options = dict(cfg.scst or {})
        df = options.pop("cider_df", "corpus")
        if df == "corpus":
            reward = CiderReward.from_references(references_of(train_data))
        elif df == "batch":
            reward = CiderReward()
        elif isinstance(df, str):
            reward = CiderReward.from_file(df)
        else:
            raise OFAError(f"scst.cider_df: expected corpus, batch or a file path, got {df!r}")
        return cls(options, reward, pad=model_config.pad, bos=model_config.bos, eos=model_config.eos,
                   language=model_config.language, constraint_range=cfg.constraint_range,
                   tokenizer=OFATokenizer.for_config(model_config))

    # ---- the three steps ----------------------------------------------------------------------
    def sample(self, model: torch.nn.Module, batch: Mapping[str, Any]) -> list[list[torch.Tensor]]:
        """Captions (token ids ending with eos, no bos) per image, decoded in eval mode."""
        module = unwrap(model)
        modes = [(m, m.training) for m in module.modules()]
        net = batch["net_input"]
        module.eval()
        try:
            hypos = self.generator.generate(module, net["src_tokens"], net.get("src_lengths"),
                                            net.get("patch_images"), net.get("patch_masks"))
        finally:
            for m, mode in modes:
                m.training = mode
        return [[h.tokens for h in group] for group in hypos]

    def text(self, tokens: torch.Tensor) -> str:
        ids = [int(t) for t in tokens.tolist() if int(t) not in (self.bos, self.eos, self.pad)]
        return self.tokenizer.decode(ids).strip()

    def log_probs(self, model: torch.nn.Module, batch: Mapping[str, Any],
                  captions: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probabilities (N, L) of every caption token (0 at padding) and the
        caption tokens (N, L) padded with pad, rows in image order."""
        net = batch["net_input"]
        device = net["src_tokens"].device
        counts = torch.tensor([len(g) for g in captions], device=device)
        rows = torch.repeat_interleave(torch.arange(len(captions), device=device), counts)
        flat = [c.to(device) for g in captions for c in g]
        width = max(int(c.numel()) for c in flat)
        target = torch.full((len(flat), width), self.pad, dtype=torch.long, device=device)
        prev = torch.full((len(flat), width), self.pad, dtype=torch.long, device=device)
        for i, c in enumerate(flat):
            target[i, : c.numel()] = c
            prev[i, 0] = self.bos
            prev[i, 1: c.numel()] = c[:-1]

        def pick(x):
            return x.index_select(0, rows) if isinstance(x, torch.Tensor) else x

        extra = {"code_masks": torch.ones(len(flat), dtype=torch.bool, device=device)} if self.code_outputs else {}
        logits = model(src_tokens=pick(net["src_tokens"]), src_lengths=pick(net.get("src_lengths")),
                       patch_images=pick(net.get("patch_images")), patch_masks=pick(net.get("patch_masks")),
                       prev_output_tokens=prev, **extra)
        if self.constraint_range is not None:
            logits = self.constraint_range.apply_(logits.clone())
        lprobs = F.log_softmax(logits.float(), dim=-1)
        tok = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return tok.masked_fill(target.eq(self.pad), 0.0), target

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any], update_num: int = 0) -> LossOutput:
        refs = batch.get("ref")
        if refs is None:
            raise OFAError("criterion scst needs the reference captions of each image in the batch "
                           "('ref', as task caption gives)")
        captions = self.sample(model, batch)
        if sum(len(g) for g in captions) == 0:
            raise OFAError("scst: the generator returned no captions")
        rewards = self.reward([[self.text(c) for c in g] for g in captions], refs)
        tok_lp, target = self.log_probs(model, batch, captions)
        return self_critical_loss(tok_lp, target, rewards, self.pad)
