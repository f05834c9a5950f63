"""Text-to-image stage 2: self-critical training with a CLIP reward (the original's
``clip_scst_reward_criterion``), ``criterion: clip_scst``.

For every caption of a micro-batch the model, in eval mode, samples ``beam_size`` code grids
(the original's ``--scst-args``: 5 samples, top-k 256, exactly one grid of codes, as
:mod:`openofa.tasks.imagine` decodes); the VQGAN decodes them to images; each image's reward is
its CLIP similarity to the caption (``ti_sim``); the baseline of an image is the mean reward of
the other images of its caption, and the loss is ``-sum advantage * sum log p(code)`` over the
teacher-forced codes, in code mode, with the code range's log-softmax (as the original's
``constraint_range``). Everything but the reward is :class:`~openofa.train.scst.SelfCriticalCriterion`'s.

Recipe keys (``scst:``): ``vqgan`` (folder or last.ckpt) and ``clip`` (ViT-B/16 weights) are
required; GenerationConfig options override the sampling.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from openofa.errors import OFAError
from openofa.train.loss import LossOutput
from openofa.train.scst import SelfCriticalCriterion, self_critical_loss

#: keys of the recipe's ``scst`` mapping besides the GenerationConfig fields
CLIP_SCST_KEYS = ("vqgan", "clip")


def clip_scst_generation(model_config, samples: int = 5) -> dict[str, Any]:
    """The original's stage-2 ``--scst-args`` in GenerationConfig names for this model's grid."""
    n = (int(model_config.code_image_size) // 8) ** 2
    return dict(beam_size=samples, nbest=samples, sampling=True, sampling_topk=256, temperature=1.0,
                min_len=n, max_len_a=0, max_len_b=n, max_len=n, gen_code=True,
                constraint_range=(model_config.code_0, model_config.code_0 + model_config.code_dict_size))


class ClipRewardCriterion(SelfCriticalCriterion):
    """``criterion(model, batch, update_num) -> LossOutput``; ``batch["ref"]`` holds each input's
    caption (the ``imagine`` task's samples do)."""

    log_keys = ("reward",)
    code_outputs = True

    def __init__(self, generation: Mapping[str, Any], vqgan_model, clip_model, model_config) -> None:
        super().__init__(dict(generation), None, pad=model_config.pad, bos=model_config.bos, eos=model_config.eos,
                         language=model_config.language, constraint_range=generation.get("constraint_range"),
                         tokenizer=object())
        self.vqgan, self.clip = vqgan_model, clip_model
        self.code_0 = int(model_config.code_0)
        self.grid = int(model_config.code_image_size) // 8

    @classmethod
    def from_config(cls, cfg, model_config, train_data: Any = None) -> "ClipRewardCriterion":
        from openofa import clip, vqgan

        options = dict(cfg.scst or {})
        missing = [k for k in CLIP_SCST_KEYS if not options.get(k)]
        if missing:
            raise OFAError(f"criterion clip_scst needs scst.{' and scst.'.join(missing)} (the VQGAN folder and "
                           "the CLIP ViT-B/16 weights that score the sampled images)")
        vq, cl = vqgan.load(options.pop("vqgan")), clip.load(options.pop("clip"))
        for p in [*vq.parameters(), *cl.parameters()]:
            p.requires_grad_(False)
        generation = {**clip_scst_generation(model_config), **options}
        return cls(generation, vq, cl, model_config)

    def rewards(self, codes: list[list[torch.Tensor]], captions: list[str]) -> list[list[float]]:
        """CLIP similarity of each sampled image to its caption."""
        from openofa import clip
        from openofa.vqgan import to_pil

        out = []
        device = next(self.vqgan.parameters()).device
        for group, caption in zip(codes, captions):
            grids = torch.stack([c[:-1] for c in group]).to(device) - self.code_0
            images = to_pil(self.vqgan.decode(grids.view(len(group), self.grid, self.grid)))
            out.append([float(s) for s in clip.scores(self.clip, images, caption)])
        return out

    def __call__(self, model, batch: Mapping[str, Any], update_num: int = 0) -> LossOutput:
        refs = batch.get("ref")
        if refs is None:
            raise OFAError("criterion clip_scst needs each input's caption in the batch ('ref', as task imagine gives)")
        codes = self.sample(model, batch)
        rewards = self.rewards(codes, [r if isinstance(r, str) else " ".join(r) for r in refs])
        tok_lp, target = self.log_probs(model, batch, codes)
        return self_critical_loss(tok_lp, target, rewards, self.pad)
