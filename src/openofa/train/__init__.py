"""Training and finetuning: the original's recipes on one CPU, one GPU or many machines.

* :class:`TrainConfig`, :func:`load_recipe` (``recipes/*.yaml``)
* :class:`Trainer`: the loop (accumulation, bf16/fp16, activation checkpointing, validation,
  best checkpoint, exact resume), :func:`run` builds model + data from a config and trains
* :class:`LabelSmoothedCrossEntropy`: the original's criterion; ``openofa.train.scst``: its
  self-critical CIDEr optimisation (``criterion: scst``, caption stage 2)
* :func:`build_optimizer`, :class:`PolynomialDecaySchedule`, :class:`EMA`
* ``openofa.train.distributed``: torchrun set-up, DDP / FSDP, activation checkpointing
* ``openofa.train.checkpoint``: atomic ``last.pt`` and exported weights

Command line: ``ofa train RECIPE`` / ``python -m openofa.train.cli RECIPE`` (see ``docs/training.md``).
"""

from openofa.train.loss import LabelSmoothedCrossEntropy, LossOutput, label_smoothed_nll_loss
from openofa.train.optim import EMA, PolynomialDecaySchedule, build_optimizer
from openofa.train.recipe import TrainConfig, load_recipe

__all__ = ["TrainConfig", "load_recipe", "Trainer", "run", "LabelSmoothedCrossEntropy", "LossOutput",
           "label_smoothed_nll_loss", "build_optimizer", "PolynomialDecaySchedule", "EMA"]


def __getattr__(name):  # the trainer pulls in the model; keep `import openofa.train` light
    if name == "Trainer":
        from openofa.train.trainer import Trainer

        return Trainer
    if name == "run":
        from openofa.train.run import run

        return run
    raise AttributeError(f"module 'openofa.train' has no attribute {name!r}")
