"""Training extensions, registered by name: the core trains OFA as released and names none of them.

Two kinds:

* **criterion hooks** add loss terms to the label-smoothed cross-entropy. A hook is
  ``extend(cfg, model_config, criterion) -> criterion``: the criterion with its terms added when
  the recipe turns the hook on, else ``criterion`` itself. Its ``check(cfg, bad)`` validates the
  recipe keys it reads when a recipe is loaded (``bad(key, why)`` returns the error to raise).
  The trainer calls every registered hook in turn (:func:`openofa.train.trainer.build_criterion`).
* **initialisation hooks** are recipe tasks that prepare the model before training instead of
  training it on a task's data: ``task: NAME`` runs ``run(cfg, image_cache=None) -> summary`` (a
  summary like the trainer's) in place of the trainer; it writes ``<run_dir>/final``, which the
  recipe's next stage starts from (:func:`openofa.train.run.run`).

A package registers its extensions when it is imported. The packages named in :data:`PROVIDERS`
are imported the first time an extension is looked up; today that is :mod:`openofa.mini`, the
project's small model, which registers the ``box_attention`` criterion hook and the ``trunk``
and ``vq`` initialisations. A hook may be given as a callable or as ``"module:attribute"``, imported on
first use (so registering costs nothing).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Union

from openofa.errors import OFAError

__all__ = ["PROVIDERS", "CriterionHook", "register_criterion", "register_initialisation", "criterion_hooks",
           "initialisation_for", "check_config"]

#: packages imported before the first look-up; each registers its extensions on import
PROVIDERS: list[str] = ["openofa.mini"]

Target = Union[Callable[..., Any], str]


@dataclass(frozen=True)
class CriterionHook:
    name: str
    extend_target: Target
    check_target: Target | None = None

    def extend(self, cfg, model_config, criterion):
        return _resolve(self.extend_target)(cfg, model_config, criterion)

    def check(self, cfg, bad: Callable[[str, str], Exception]) -> None:
        if self.check_target is not None:
            _resolve(self.check_target)(cfg, bad)


_CRITERIA: dict[str, CriterionHook] = {}
_INITIALISATIONS: dict[str, Target] = {}
_loaded: set[str] = set()
_lock = threading.RLock()


def register_criterion(name: str, extend: Target, check: Target | None = None) -> None:
    """Register (or replace) the criterion hook ``name``."""
    _CRITERIA[name] = CriterionHook(name, extend, check)


def register_initialisation(task: str, run: Target) -> None:
    """Register (or replace) the initialisation hook run by a stage with ``task: <task>``."""
    _INITIALISATIONS[task] = run


def criterion_hooks() -> list[CriterionHook]:
    """The registered criterion hooks, in the order they were registered."""
    _load_providers()
    return list(_CRITERIA.values())


def initialisation_for(task: str) -> Callable[..., Any] | None:
    """The initialisation hook of ``task: <task>``, or None when the task is an ordinary one."""
    _load_providers()
    target = _INITIALISATIONS.get(task)
    return None if target is None else _resolve(target)


def check_config(cfg, bad: Callable[[str, str], Exception]) -> None:
    """Let every criterion hook validate the recipe keys it reads."""
    for hook in criterion_hooks():
        hook.check(cfg, bad)


def _load_providers() -> None:
    with _lock:
        for name in PROVIDERS:
            if name not in _loaded:
                _loaded.add(name)
                importlib.import_module(name)


def _resolve(target: Target) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise OFAError(f"training extension {target!r} cannot be loaded: {e}") from None
