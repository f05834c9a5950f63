"""Load PyTorch ``.pt`` / ``.bin`` files without fairseq or omegaconf and without running code.

Official OFA checkpoints are fairseq training snapshots: a pickle that, besides tensors, may hold an
``argparse.Namespace``, NumPy scalars and, in files written by older fairseq versions, OmegaConf
containers and fairseq enum members. Plain ``torch.load`` would import fairseq/omegaconf for
those (and would run whatever a hostile file asks for); ``torch.load(weights_only=True)`` refuses
them. So this module does three things, in order:

1. reads the pickle's opcodes (``pickletools``, nothing is executed) and lists every global it
   names; a global that is neither data nor an inert stand-in is refused right there, with the
   file and the global in the error;
2. loads the file with torch's own ``weights_only`` unpickler, with the allowed extras
   (``argparse.Namespace``, NumPy scalars/dtypes, a few inert builtins) and one :class:`StandIn`
   class per OmegaConf/fairseq/enum/typing global registered through
   ``torch.serialization.safe_globals``;
3. only if torch's unpickler cannot read the pickle at all (it understands protocol 2 only, and
   only a subset of opcodes), falls back to ``torch.load(pickle_module=...)`` with a restricted
   pure-Python unpickler whose ``find_class`` answers from the same allow-list.

:func:`to_plain` turns the result's stand-ins, namespaces and NumPy scalars into plain
dicts/lists/numbers.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import io
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openofa.errors import OFAError

# modules whose globals become inert records instead of being imported
STANDIN_MODULES = ("omegaconf", "fairseq", "enum", "typing",
                   "pytorch_lightning", "lightning")  # Lightning callbacks and hparams in a VQGAN last.ckpt

# torch's legacy (pre-1.6, non-zip) files start with the pickled magic number 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."

_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


# ---- stand-ins --------------------------------------------------------------------------------


class StandIn:
    """Inert record of an object whose class is not imported (OmegaConf containers and nodes,
    fairseq enum members, ``typing.Any``...): it keeps the constructor arguments in ``args`` /
    ``kwargs`` and the pickled state in ``state``. Read it through :meth:`to_plain` or the
    mapping-style accessors, which work on the plain view."""

    _ofa_global = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        self = object.__new__(cls)
        self.args = args
        self.kwargs = kwargs
        self.state = None
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in {self._ofa_global}>"

    def to_plain(self) -> Any:
        return to_plain(self)

    # mapping-style access to the plain view (for DictConfig-like records)
    def _view(self) -> Any:
        return to_plain(self)

    def __getitem__(self, key: Any) -> Any:
        return self._view()[key]

    def get(self, key: Any, default: Any = None) -> Any:
        view = self._view()
        return view.get(key, default) if isinstance(view, dict) else default

    def keys(self) -> Any:
        view = self._view()
        return view.keys() if isinstance(view, dict) else []

    def items(self) -> Any:
        view = self._view()
        return view.items() if isinstance(view, dict) else []

    def __contains__(self, key: Any) -> bool:
        view = self._view()
        return isinstance(view, (dict, list)) and key in view

    def __iter__(self) -> Any:
        view = self._view()
        return iter(view) if isinstance(view, (dict, list)) else iter(())

    def __len__(self) -> int:
        view = self._view()
        return len(view) if isinstance(view, (dict, list)) else 0

    def __bool__(self) -> bool:
        return True


_standin_classes: dict[str, type] = {}


def standin_class(full_name: str) -> type:
    """The (cached) stand-in class recorded under ``module.qualname``."""
    cls = _standin_classes.get(full_name)
    if cls is None:
        cls = type(full_name.rsplit(".", 1)[-1], (StandIn,), {"_ofa_global": full_name, "__module__": __name__})
        _standin_classes[full_name] = cls
    return cls


def _is_standin_name(full_name: str) -> bool:
    return any(full_name.startswith(m + ".") for m in STANDIN_MODULES)


def to_plain(obj: Any, _active: set[int] | None = None) -> Any:
    """Recursively turn stand-ins, namespaces, OrderedDicts and NumPy values into plain Python
    dicts, lists and numbers (tensors are left as they are; reference cycles become None)."""
    active = _active if _active is not None else set()
    if isinstance(obj, type) and issubclass(obj, StandIn):
        return obj._ofa_global
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.dtype):
        return str(obj)
    if isinstance(obj, (str, int, float, bool, complex, bytes, type(None), torch.Tensor)):
        return obj
    if id(obj) in active:
        return None
    active.add(id(obj))
    try:
        if isinstance(obj, StandIn):
            return _standin_to_plain(obj, active)
        if isinstance(obj, argparse.Namespace):
            return {k: to_plain(v, active) for k, v in vars(obj).items()}
        if isinstance(obj, dict):
            return {_plain_key(k, active): to_plain(v, active) for k, v in obj.items()}
        if isinstance(obj, list):
            return [to_plain(v, active) for v in obj]
        if isinstance(obj, tuple):
            return tuple(to_plain(v, active) for v in obj)
        if isinstance(obj, (set, frozenset)):
            return [to_plain(v, active) for v in obj]
        return obj
    finally:
        active.discard(id(obj))


def _plain_key(key: Any, active: set[int]) -> Any:
    plain = to_plain(key, active)
    try:
        hash(plain)
    except TypeError:
        return repr(plain)
    return plain


def _standin_to_plain(obj: StandIn, active: set[int]) -> Any:
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and (state[1] is None or isinstance(state[1], dict)):
        merged = dict(state[0] or {}) if isinstance(state[0], dict) else {}
        merged.update(state[1] or {})
        state = merged
    if isinstance(state, dict):
        if "_content" in state:  # OmegaConf DictConfig / ListConfig
            return to_plain(state["_content"], active)
        if "_val" in state:  # OmegaConf value node
            return to_plain(state["_val"], active)
        return {k: to_plain(v, active) for k, v in state.items() if k != "_parent"}
    if state is not None:
        return to_plain(state, active)
    if len(obj.args) == 1 and not obj.kwargs:  # enum member: Cls(value)
        return to_plain(obj.args[0], active)
    if obj.kwargs:
        return {k: to_plain(v, active) for k, v in obj.kwargs.items()}
    if obj.args:
        return [to_plain(v, active) for v in obj.args]
    return obj._ofa_global


# ---- the allow-list ---------------------------------------------------------------------------


def _numpy_globals() -> dict[str, Any]:
    core = getattr(np, "_core", None) or np.core
    out: dict[str, Any] = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[f"{mod}.scalar"] = core.multiarray.scalar
        out[f"{mod}._reconstruct"] = core.multiarray._reconstruct
    dtypes = getattr(np, "dtypes", None)
    for name in getattr(dtypes, "__all__", ()):
        out[f"numpy.dtypes.{name}"] = getattr(dtypes, name)
    return out


def _extra_globals() -> dict[str, Any]:
    """What we allow beyond torch's own weights_only list: data constructors only."""
    out: dict[str, Any] = {
        "argparse.Namespace": argparse.Namespace,
        "collections.OrderedDict": collections.OrderedDict,
        "collections.defaultdict": collections.defaultdict,
    }
    for t in (set, frozenset, complex, slice, range, dict, list, tuple, str, int, float, bool):
        out[f"builtins.{t.__name__}"] = t
    out.update(_numpy_globals())
    return out


def _torch_globals() -> dict[str, Any]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return dict(_get_allowed_globals())
    except Exception:  # private API moved: fall back to the essentials
        import torch._utils as tu

        out: dict[str, Any] = {
            "collections.OrderedDict": collections.OrderedDict,
            "torch.nn.parameter.Parameter": torch.nn.Parameter,
            "torch.Size": torch.Size,
            "torch.device": torch.device,
            "_codecs.encode": __import__("_codecs").encode,
            "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        }
        for name in dir(tu):
            if name.startswith("_rebuild_"):
                out[f"torch._utils.{name}"] = getattr(tu, name)
        for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool):
            out[str(dt)] = dt
        return out


_ALLOWED: dict[str, Any] | None = None


def allowed_globals() -> dict[str, Any]:
    """Every global a checkpoint may name, mapped to the real object (stand-ins not included)."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = {**_torch_globals(), **_extra_globals()}
    return _ALLOWED


def _is_storage_name(full_name: str) -> bool:
    return full_name.startswith("torch.") and full_name.endswith("Storage")


# ---- scanning the pickle without running it ---------------------------------------------------


def _fix_name(module: str, name: str) -> str:
    """Python 2 names in protocol <= 2 pickles, mapped the way the unpicklers map them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _scan_one(stream: Any) -> tuple[list[str], bool]:
    """Globals named by one pickle read from ``stream`` (up to its STOP opcode). The second value
    is True when a STACK_GLOBAL's operands could not be followed (then only the unpickler's own
    check decides)."""
    names: list[str] = []
    unresolved = False
    memo: dict[int, Any] = {}
    trail: list[Any] = []  # values pushed by the latest run of string / memo operations
    for op, arg, _pos in pickletools.genops(stream):
        kind = op.name
        if kind in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            names.append(_fix_name(module, name))
            trail = []
        elif kind == "STACK_GLOBAL":
            if len(trail) >= 2 and isinstance(trail[-2], str) and isinstance(trail[-1], str):
                names.append(f"{trail[-2]}.{trail[-1]}")
            else:
                unresolved = True
            trail = []
        elif kind in _STRING_OPS:
            trail.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif kind in _GET_OPS:
            trail.append(memo.get(arg))
        elif kind in _PUT_OPS:
            memo[arg] = trail[-1] if trail else None
        elif kind == "MEMOIZE":
            memo[len(memo)] = trail[-1] if trail else None
        elif kind == "FRAME":
            pass
        else:
            trail = []
    return names, unresolved


def _sniff(path: Path) -> str:
    """'zip' or 'legacy', or an OFAError saying what the file is not."""
    if not path.exists():
        raise OFAError(f"{path}: no such file")
    if path.is_dir():
        raise OFAError(f"{path}: is a directory, expected a PyTorch checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise OFAError(f"{path}: empty file, expected a PyTorch checkpoint")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if zipfile.is_zipfile(path):
        return "zip"
    if head.startswith(b"PK"):
        raise OFAError(f"{path}: truncated or corrupt zip archive (PyTorch checkpoint expected)")
    if head == _LEGACY_MAGIC:
        return "legacy"
    raise OFAError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a legacy torch pickle)")


def scan_globals(path: str | Path) -> tuple[list[str], bool]:
    """Every global the pickle in a torch file names, without unpickling anything."""
    path = Path(path)
    kind = _sniff(path)
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                pkl = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if len(pkl) != 1:
                    raise OFAError(f"{path}: zip archive is not a PyTorch checkpoint (no single data.pkl inside)")
                return _scan_one(io.BytesIO(zf.read(pkl[0])))
        names: list[str] = []
        unresolved = False
        with open(path, "rb") as f:  # magic, protocol, sys info, the object, storage keys
            for _ in range(5):
                more, unres = _scan_one(f)
                names += more
                unresolved |= unres
        return names, unresolved
    except OFAError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, UnicodeDecodeError) as e:
        raise OFAError(f"{path}: truncated or corrupt PyTorch checkpoint ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


# ---- the fallback unpickler -------------------------------------------------------------------


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _resolve(full_name: str) -> Any:
    obj = allowed_globals().get(full_name)
    if obj is not None:
        return obj
    if _is_standin_name(full_name):
        return standin_class(full_name)
    raise _Refused(full_name)


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-Python unpickler that only hands out allow-listed globals and stand-ins, and will not
    set attributes on classes (BUILD applies to instances only)."""

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:
            full = _fix_name(module, name)
        else:
            full = f"{module}.{name}"
        return _resolve(full)

    def load_build(self) -> None:
        if isinstance(self.stack[-2], type):
            raise pickle.UnpicklingError("BUILD on a class is not allowed")
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.BUILD[0]] = load_build


class _RestrictedPickleModule:
    """The ``pickle_module`` handed to ``torch.load`` in the fallback path."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = "openofa_restricted_pickle"

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


# ---- loading ----------------------------------------------------------------------------------


def load_pt(path: str | Path) -> Any:
    """Load a torch file on CPU through the allow-list; refuse anything else with an OFAError
    naming the file and the offending global. Nothing from the file is executed."""
    path = Path(path)
    names, _unresolved = scan_globals(path)
    allowed = allowed_globals()
    extra = _extra_globals()
    standins: dict[str, type] = {}
    for name in dict.fromkeys(names):
        if name in allowed or _is_storage_name(name):
            continue
        if _is_standin_name(name):
            standins[name] = standin_class(name)
            continue
        raise OFAError(
            f"{path}: refusing to load: the pickle names the global {name!r}, which is not plain data "
            "(allowed: tensors, containers, NumPy scalars, argparse.Namespace, OmegaConf/fairseq records)"
        )
    safe = [(obj, name) for name, obj in extra.items()] + [(cls, name) for name, cls in standins.items()]
    try:
        with torch.serialization.safe_globals(safe), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # torch's unpickler cannot read this pickle; use the restricted pure-Python one
    except OFAError:
        raise
    except Exception as e:
        raise OFAError(f"{path}: truncated or corrupt PyTorch checkpoint ({_one_line(e)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    except _Refused as e:
        raise OFAError(f"{path}: refusing to load: the pickle names the global {e.name!r}, which is not plain data") from None
    except Exception as e:
        raise OFAError(f"{path}: cannot read PyTorch checkpoint ({_one_line(e)})") from None
