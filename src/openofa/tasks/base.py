"""What every task declares: its input fields and options, its data layouts, and the interface
that builds model inputs (for inference and for training alike) and reads answers back.

A task module (``tasks/<task>.py``) is the one place a task is defined. The API
(:class:`openofa.api.OFA`), the ``ofa`` command, ``ofa eval``, the data readers and the training
sample builder all read it from the registry (:data:`openofa.tasks.TASKS`):

* ``inputs``: the fields of one input (:class:`Field`; the API's arguments, the CLI's flags, the
  keys of ``OFA.run`` items), ``options``: settings of a whole call (candidate answers, class
  names, ...);
* ``layouts``: the task's data files in the original's column order (:class:`TaskLayout`), with
  the function that reads a row's fields into a :class:`~openofa.data.records.Record`;
* ``prepare`` (one input -> :class:`Example`) and ``predict`` (examples -> results) for
  inference, ``sample`` (a record -> a training sample) for training, both from the same prompt
  and source builders of the module;
* ``generation``: the decoding settings of the original's evaluation script;
* ``reference`` / ``inputs_of`` / ``metric``: how ``ofa eval`` reads a data row and scores the
  predictions; ``output`` the key of a result that is the prediction.

A task never touches the network: it calls the runner (:class:`openofa.api.OFA`), which owns the
model, the tokenizer and the one shared generator, or the sample builder
(:class:`openofa.data.samples.SampleBuilder`), which owns the tokenizer and the data settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import torch

from openofa.errors import OFAError

if TYPE_CHECKING:  # pragma: no cover
    from openofa.api import OFA
    from openofa.data.records import Record
    from openofa.data.samples import SampleBuilder

#: the original's ``prompt_type``: where the source also goes to the decoder as a forced prefix
PROMPT_TYPES = ("prev_output", "none", "src")
#: the kinds of value a field takes
FIELD_TYPES = ("image", "text", "texts", "int", "bool", "choice")


@dataclass(frozen=True)
class Field:
    """One input field or option of a task.

    ``type``: ``image`` (a path, bytes, base64 text or a PIL image), ``text`` (a string),
    ``texts`` (a list of strings; on the command line comma-separated or ``@file``), ``int``,
    ``bool`` or ``choice`` (one of ``choices``). ``flag``/``short``: the command-line flags
    (default ``--name``); ``negate``: a bool option whose flag sets it False (``--any-token``)."""

    name: str
    type: str
    help: str = ""
    required: bool = False
    default: Any = None
    choices: tuple = ()
    flag: str | None = None
    short: str | None = None
    negate: bool = False

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field {self.name}: unknown type {self.type!r}")

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, task: str, where: str, value: Any) -> None:
        """One-line error for a value of the wrong type (None is "not given")."""
        if value is None or self.type == "image":
            return
        ok = {"text": lambda v: isinstance(v, str),
              "texts": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "bool": lambda v: isinstance(v, bool),
              "choice": lambda v: v in self.choices}[self.type](value)
        if ok and self.type in ("text", "texts"):  # command-line bytes that are not UTF-8 arrive as surrogates
            for text in [value] if self.type == "text" else value:
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise OFAError(f"{task}: {where}{self.name} is not valid UTF-8 text") from None
        if not ok and self.type == "choice":
            raise OFAError(f"{task}: {where}unknown {self.name} {value!r}; expected one of "
                           f"{', '.join(map(str, self.choices))}")
        if not ok:
            want = {"text": "a string", "texts": "a list of strings", "int": "an integer",
                    "bool": "True or False"}[self.type]
            raise OFAError(f"{task}: {where}{self.name} must be {want}, got {type(value).__name__}")


#: the image of an image task, shared by their declarations
IMAGE = Field("image", "image", "an image: file path, bytes, base64 text or a PIL image", required=True)


@dataclass(frozen=True)
class TaskLayout:
    """One kind of data file: ``fields`` in the original's selected-column order, ``columns`` the
    default column of each (the original's ``--selected-cols``), ``optional`` the fields a row may
    lack, ``targets`` the fields only training and evaluation need (inference inputs may lack
    them), ``read(record, fields, where, targets)`` fills a record from a row's fields, and the
    official finetuning settings used when :func:`~openofa.data.build_dataset` is not told.
    ``task`` is the layout's name (a task's name, a GLUE task, a pretraining file); ``owner``
    the registered task whose samples its rows make (None: a pretraining file, whose samples
    ``build(builder, record)`` makes)."""

    task: str
    fields: tuple[str, ...]
    columns: tuple[int, ...]
    optional: frozenset = frozenset()
    image: bool = True
    patch_image_size: int | None = 480
    max_src_length: int = 80
    max_tgt_length: int = 20
    settings: Mapping[str, object] = field(default_factory=dict)
    doc: str = ""
    owner: str | None = None
    targets: frozenset = frozenset()
    read: Callable[..., None] | None = None
    build: Callable[..., Any] | None = None
    aliases: tuple[str, ...] = ()

    def default_columns(self) -> dict[str, int]:
        return dict(zip(self.fields, self.columns))


def layout(task: str, fields: Sequence[str], columns: Sequence[int], **kw) -> TaskLayout:
    """A :class:`TaskLayout` from lists (``optional`` / ``targets`` as any iterable)."""
    for key in ("optional", "targets"):
        kw[key] = frozenset(kw.get(key, ()))
    return TaskLayout(task, tuple(fields), tuple(columns), **kw)


@dataclass
class Example:
    """One model input. ``src`` includes bos/eos; ``prefix`` is forced at the start of the output
    (after bos) and stripped from the answer; ``info`` keeps what post-processing needs."""

    src: list[int]
    image: torch.Tensor | None = None
    prefix: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def prompt_prefix(src: list[int], prompt_type: str, task: str, allowed: Sequence[str] = PROMPT_TYPES,
                  setting: str = "prompt_type") -> list[int]:
    """The decoder prefix of a source for the original's ``prompt_type``: ``prev_output`` the source
    without bos and eos, ``src`` without bos, ``none`` nothing (``setting``: the setting's name,
    for the message)."""
    if prompt_type not in allowed:
        raise OFAError(f"{task}: {setting} {prompt_type!r} is not supported ({' or '.join(allowed)})")
    return {"prev_output": src[1:-1], "none": [], "src": src[1:]}[prompt_type]


class Task:
    name: ClassVar[str]
    #: one line for ``ofa --help``
    help: ClassVar[str] = ""
    #: other names of the task (the original's task and dataset names)
    aliases: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[tuple[Field, ...]] = ()
    options: ClassVar[tuple[Field, ...]] = ()
    layouts: ClassVar[tuple[TaskLayout, ...]] = ()
    #: image side used when the checkpoint does not say (the original's finetuning setting)
    image_size: ClassVar[int] = 480
    #: decoding settings of the original's evaluation script for this task
    generation: ClassVar[dict[str, Any]] = {}
    #: the key of a result that is the prediction (scored by ``metric``, printed by the CLI)
    output: ClassVar[str] = "label"
    #: the headline metric's name
    metric_name: ClassVar[str] = "accuracy"
    #: the languages the task has prompts for (the original's English-only tasks refuse a Chinese model)
    languages: ClassVar[tuple[str, ...]] = ("en", "zh")
    #: whether results carry boxes (``ofa <task> --draw``); see :meth:`boxes`
    draws: ClassVar[bool] = False
    #: whether training targets can be restricted to a candidate answer list (``ans2label_file``)
    candidates: ClassVar[bool] = False
    #: how images are resized: ``square`` (to the patch size), or ``refcoco`` (grounding's
    #: RandomResize with ``max_image_size``, see :class:`openofa.vision.transforms.ImagePreprocess`)
    image_mode: ClassVar[str] = "square"
    #: the task setting that says whether the source is also the decoder's prefix
    prompt_setting: ClassVar[str] = "prompt_type"
    #: command line: a positional input that is not a file is the text itself (``ofa imagine "a bus"``)
    literal_inputs: ClassVar[bool] = False
    #: results hold images: the command line writes them (``--out``) through :meth:`save`
    writes_images: ClassVar[bool] = False

    @classmethod
    def takes_image(cls) -> bool:
        return any(f.type == "image" for f in cls.inputs)

    @classmethod
    def field(cls, name: str) -> Field:
        for f in cls.inputs + cls.options:
            if f.name == name:
                return f
        raise KeyError(name)

    # ---- inference -----------------------------------------------------------------------------
    def prepare(self, ofa: "OFA", **inputs: Any) -> Example:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, ofa: "OFA", examples: list[Example], **options: Any) -> list[dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - interface

    def settings_apply(self, ofa: "OFA") -> bool:
        """Whether the loaded model's image settings apply to this task (else the task's own)."""
        return True

    def format(self, result: dict[str, Any]) -> str:
        """The command line's plain-text form of a result."""
        return str(result[self.output])

    def save(self, result: dict[str, Any], folder: Any, name: str, used: set) -> dict[str, Any]:
        """Tasks with ``writes_images``: write a result's images into ``folder`` (named after the
        input ``name``, unique among ``used``); return the result naming the files instead."""
        return result

    @staticmethod
    def write_images(images: list, folder: Any, stem: str, used: set) -> list[str]:
        """Write ``images`` as ``<folder>/<base>_<k>.png``, ``base`` being ``stem`` numbered
        (``stem_2``...) when ``used`` already holds it; returns the paths written."""
        folder.mkdir(parents=True, exist_ok=True)
        base, n = stem, 1
        while base in used:
            n += 1
            base = f"{stem}_{n}"
        used.add(base)
        files = []
        for k, im in enumerate(images):
            path = folder / f"{base}_{k}.png"
            im.save(path)
            files.append(str(path))
        return files

    def prediction(self, result: dict[str, Any]) -> Any:
        """What ``ofa eval`` scores of a result (``result[output]`` unless a task says otherwise)."""
        return result[self.output]

    def boxes(self, result: dict[str, Any]) -> list[tuple[list[float], str]]:
        """(box, label) pairs of a result, for drawing (tasks with ``draws``)."""
        return []

    # ---- training ------------------------------------------------------------------------------
    def sample(self, b: "SampleBuilder", r: "Record") -> dict[str, Any]:  # pragma: no cover - interface
        raise OFAError(f"task {self.name} has no training samples")

    def train_transform(self, b: "SampleBuilder") -> Callable | None:
        """A random training-time image transform (None: the plain resize)."""
        return None

    # ---- evaluation ----------------------------------------------------------------------------
    def reference(self, r: "Record") -> Any:
        """What a prediction for ``r`` is scored against (the original's evaluation refs)."""
        return r.label

    def layout_for(self, fields: dict[str, Any]) -> TaskLayout | None:
        """The layout a data file of inputs is read with, given the fields set for every input
        (None: the task reads no data files)."""
        return self.layouts[0] if self.layouts else None

    def inputs_of(self, r: "Record", layout: TaskLayout) -> dict[str, Any]:
        """The inputs (``prepare`` arguments) of a data row."""
        return {"image": r.image}

    def eval_options(self, refs: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        """Options of an evaluation run that depend on the references (candidate lists)."""
        return options

    def with_candidates(self, candidates: list[str], options: dict[str, Any]) -> dict[str, Any]:
        """Options of a validation run scored against the training candidate list (tasks with
        ``candidates``), as the original's validation does."""
        return options

    def metric(self, predictions: list[Any], references: list[Any], layout: TaskLayout) -> dict[str, float]:
        """The headline metric (under ``metric_name``) and any others."""
        from openofa.metrics import classification_accuracy

        return {self.metric_name: classification_accuracy(predictions, references)}
