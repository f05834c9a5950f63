"""What every task shares: a prepared example, and the small interface a task implements.

A task turns user inputs into model inputs (prompt ids, image tensor, forced decoder prefix) and
turns generated or scored tokens back into an answer. It never touches the network directly:
it calls the runner (:class:`openofa.api.OFA`), which owns the model, the tokenizer and the one
shared generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:  # pragma: no cover
    from openofa.api import OFA


@dataclass
class Example:
    """One model input. ``src`` includes bos/eos; ``prefix`` is forced at the start of the output
    (after bos) and stripped from the answer; ``info`` keeps what post-processing needs."""

    src: list[int]
    image: torch.Tensor | None = None
    prefix: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Task:
    name: ClassVar[str]
    uses_image: ClassVar[bool] = True
    #: image side used when the checkpoint does not say (the original's finetuning setting)
    image_size: ClassVar[int] = 480
    #: decoding settings of the original's evaluation script for this task
    generation: ClassVar[dict[str, Any]] = {}

    def prepare(self, ofa: "OFA", **inputs: Any) -> Example:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, ofa: "OFA", examples: list[Example], **options: Any) -> list[dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - interface
