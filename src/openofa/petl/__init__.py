"""Parameter-efficient tuning: train a few added or chosen weights of a model, keep the rest.

Methods (one class each, a recipe's ``petl`` section names one or a list):

| method | what trains | file |
|---|---|---|
| ``adapter`` | bottleneck adapters in every layer's FFN branch (the original's ``--adapter``) | ``original.py`` |
| ``prefix`` | per-layer key/value prefixes (the original's ``--encoder/decoder-prompt``) | ``original.py`` |
| ``bitfit`` | the original's selection of biases | ``original.py`` |
| ``lora`` | low-rank updates of chosen linear layers, mergeable | ``lora.py`` |
| ``pi`` | π-Tuning: several tasks' adapters mixed per layer, chosen by task similarity | ``pi.py`` |

Adapters are saved and loaded in the ``peft`` library's folder layout by ``files.py``.
"""

from __future__ import annotations

from typing import Any, Mapping

from openofa.errors import OFAError
from openofa.petl.lora import LoRA, merge_lora
from openofa.petl.original import Adapters, BitFit, Prefix, bitfit_names
from openofa.petl.pi import PiTuning

METHODS = {"adapter": Adapters, "prefix": Prefix, "bitfit": BitFit, "lora": LoRA, "pi": PiTuning}

__all__ = ["METHODS", "Adapters", "BitFit", "LoRA", "PiTuning", "Prefix", "apply", "bitfit_names", "freeze_except",
           "merge_lora", "methods_from", "trainable_names"]


def methods_from(spec: Any) -> list:
    """The method objects of a ``petl`` section: one mapping ``{method: name, ...options}`` or a
    list of them (an adapter and a prefix together, as the original allows)."""
    if spec is None:
        return []
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    out = []
    for item in items:
        if isinstance(item, str):
            item = {"method": item}
        if not isinstance(item, Mapping) or "method" not in item:
            raise OFAError(f"petl: each entry needs a 'method' ({', '.join(METHODS)}), got {item!r:.80}")
        name = item["method"]
        if name not in METHODS:
            raise OFAError(f"petl: unknown method {name!r}; known: {', '.join(METHODS)}")
        cls = METHODS[name]
        options = {k: v for k, v in item.items() if k != "method"}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise OFAError(f"petl: method {name} has no option {', '.join(unknown)}; "
                           f"its options: {', '.join(sorted(known)) or 'none'}")
        try:
            out.append(cls(**options))
        except TypeError as e:
            raise OFAError(f"petl: method {name}: {e}") from None
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise OFAError(f"petl: a method is listed twice ({', '.join(names)})")
    return out


def apply(model, spec: Any) -> list[str]:
    """Add the methods of ``spec`` to ``model``; returns the names of the new parameters."""
    added: list[str] = []
    for method in methods_from(spec):
        added += method.apply(model)
    return added


def trainable_names(model, spec: Any) -> list[str]:
    """The parameters ``spec``'s methods train, in the model's order."""
    want = set()
    for method in methods_from(spec):
        want.update(method.trainable(model))
    return [n for n, _ in model.named_parameters() if n in want]


def freeze_except(model, names: list[str]) -> int:
    """Freeze every parameter of ``model`` but ``names``; returns how many elements train."""
    keep = set(names)
    missing = keep - {n for n, _ in model.named_parameters()}
    if missing:
        raise OFAError(f"petl: no parameter {sorted(missing)[0]} in the model")
    total = 0
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep)
        total += p.numel() if n in keep else 0
    return total
