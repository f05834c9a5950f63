"""Training recipes: a YAML (or JSON) file that maps key by key onto :class:`TrainConfig`.

    # recipes/caption_base.yaml
    task: caption
    model: base
    init_from: checkpoints/ofa_base.pt
    lr: 1.0e-5
    ...
    model_config: {dropout: 0.1, encoder_drop_path_rate: 0.1}
    data: {max_src_length: 80, max_tgt_length: 20, patch_image_size: 480}

Top-level keys are the fields below; ``model_config`` holds :class:`openofa.config.OFAConfig`
fields (regularisation; the sizes come from ``model`` / ``init_from``), ``data`` the data layer's
options, ``eval`` the decoding options of the validation metric. An unknown key is an error
naming the file and the key. ``--set key=value`` (``--set data.max_src_length=100``) overrides
any of them from the command line; values are read as YAML scalars.

YAML needs PyYAML (``pip install pyyaml``); a ``.json`` recipe with the same keys needs nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from openofa.errors import OFAError

PRECISIONS = ("fp32", "bf16", "fp16")
CRITERIA = ("label_smoothed_cross_entropy", "scst", "clip_scst")
RESUME = ("auto", "always", "never")


@dataclass
class TrainConfig:
    # ---- what to train -------------------------------------------------------------------------
    task: str = "caption"  # the data layer's task name; "synthetic" needs no data (smoke tests)
    model: str = "base"  # size: tiny, medium, base, large, huge, base-zh, large-zh
    init_from: str | None = None  # weights to start from (the original's --restore-file)
    model_config: dict = field(default_factory=dict)  # OFAConfig fields: dropout, drop path rates...
    # ---- data ------------------------------------------------------------------------------------
    train_data: str | list[str] | None = None
    # task: mixture -> {task: train file} (multi-task training, e.g. the project's own model);
    # data options per task under data[task], shared ones at the top of data
    mixture: dict = field(default_factory=dict)
    # {task: ratio}: that task gives round(ratio x rows of the first mixture file) examples per epoch,
    # read on through its file from epoch to epoch (the original pretraining's 1 text pair, 1 image
    # and 1 detection row per 8 image-text rows); tasks not named here give all their rows
    mixture_ratio: dict = field(default_factory=dict)
    valid_data: str | list[str] | None = None
    data: dict = field(default_factory=dict)  # options for openofa.data.build_dataset
    num_workers: int = 0
    # ---- batches and schedule --------------------------------------------------------------------
    batch_size: int = 8  # examples per process and micro-batch
    update_freq: int = 1  # micro-batches per update (gradient accumulation)
    max_epoch: int = 0
    max_update: int = 0  # 0: no limit other than max_epoch
    total_num_update: int = 0  # lr decay horizon; 0: computed from max_epoch (or max_update)
    lr: float = 1e-5
    end_lr: float = 0.0
    warmup_ratio: float = 0.0
    warmup_updates: int = 0  # if set, instead of warmup_ratio
    lr_power: float = 1.0
    # learning-rate multipliers by parameter-name prefix, e.g. {encoder.embed_images: 4.0}
    lr_scale: dict = field(default_factory=dict)
    # ---- optimizer -------------------------------------------------------------------------------
    weight_decay: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    clip_norm: float = 1.0
    # ---- loss --------------------------------------------------------------------------------------
    # label_smoothed_cross_entropy, or scst: self-critical CIDEr optimisation (caption stage 2)
    criterion: str = "label_smoothed_cross_entropy"
    # criterion scst: GenerationConfig options of the captions it samples (default: the original's
    # --scst-args beam 5, max_len_b 16, no_repeat_ngram_size 3) and cider_df: corpus | batch | file
    scst: dict = field(default_factory=dict)
    label_smoothing: float = 0.1
    ignore_prefix_size: int = 0
    ignore_eos: bool = False
    drop_worst_ratio: float = 0.0
    drop_worst_after: int = 0
    constraint_range: str | None = None
    # keys of the box_attention criterion hook (openofa.mini.box_attention, registered through
    # openofa.train.extensions; not in the original): a loss on one decoder layer's cross-attention
    # at the first box token, pulling it onto the box's patches; 0 = off
    box_attention_weight: float = 0.0
    box_attention_layer: int = -1
    box_attention_steps: int = 1  # the first N location tokens (1-4)
    box_attention_cells: str = "box"  # box: the cells inside the box; centre: the box centre's cell
    # ---- freezing ------------------------------------------------------------------------------------
    freeze_embedding: bool = False  # the shared token embedding (= output projection)
    freeze_resnet: bool = False  # the whole image trunk
    freeze_bn: bool = False  # only the trunk's batch norms (the original's --freeze-resnet)
    # ---- parameter-efficient tuning (docs/petl.md) ----------------------------------------------------
    # one method {method: lora | adapter | prefix | bitfit, ...its options} or a list of them: only
    # their weights train (the trunk's batch norms keep their statistics), and final/ and best/ are
    # adapter folders holding only those weights (peft's layout)
    petl: dict | list[dict] | None = None
    export_merged: bool = False  # with petl: also final_merged/, the whole model (LoRA merged in)
    image_cache_mb: float = 0.0  # keep decoded image files in memory (openofa.data.image_cache; 0 = off)
    image_feature_cache_mb: float = 0.0  # with freeze_resnet: remember the trunk's features (0 = off)
    # ---- precision and memory --------------------------------------------------------------------------
    precision: str = "fp32"  # fp32, bf16 (autocast) or fp16 (autocast + dynamic loss scaling)
    fp16_init_scale: float = 128.0
    fp16_scale_window: int = 512
    activation_checkpointing: bool = False
    # ---- processes -----------------------------------------------------------------------------------
    device: str = "auto"  # auto, cpu, cuda
    parallel: str = "ddp"  # ddp or fsdp (when started by torchrun)
    find_unused_parameters: bool = True
    sync_bn: bool = False
    # ---- EMA -------------------------------------------------------------------------------------------
    ema_decay: float = 0.0  # 0: off
    ema_start_update: int = 0
    validate_with_ema: bool = True  # validate (and pick the best) with the EMA weights when on
    # ---- validation and checkpoints ----------------------------------------------------------------------
    validate_every_updates: int = 0  # 0: only at epoch ends
    validate_every_epochs: int = 1  # 0: never at epoch ends
    save_every_updates: int = 0
    save_every_epochs: int = 1
    best_metric: str = "loss"  # a key of the evaluation's metrics
    maximize_best: bool = False
    eval: dict = field(default_factory=dict)  # decoding options of the task metric (--eval-args)
    validation_seed: int = 7
    # ---- bookkeeping ---------------------------------------------------------------------------------------
    seed: int = 1
    log_every: int = 10
    run_dir: str = "runs/train"
    resume: str = "auto"  # auto: continue from run_dir/last.pt if there; always: must; never: must not
    tensorboard: bool = True  # if tensorboard is installed
    progress: bool = True
    seeded_examples: bool = True  # per-example RNG seeds for data augmentation (exact resume)

    # ------------------------------------------------------------------------------------------------------
    def validate(self, source: str = "config") -> "TrainConfig":
        """Check values; raise OFAError naming ``source`` and the field."""
        from openofa.config import OFAConfig, get_config

        def bad(key: str, why: str) -> OFAError:
            return OFAError(f"{source}: {key}: {why}")

        if self.precision not in PRECISIONS:
            raise bad("precision", f"{self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.resume not in RESUME:
            raise bad("resume", f"{self.resume!r} is not one of {', '.join(RESUME)}")
        if self.parallel not in ("ddp", "fsdp"):
            raise bad("parallel", f"{self.parallel!r} is not one of ddp, fsdp")
        for key in ("batch_size", "update_freq", "log_every"):
            if getattr(self, key) <= 0:
                raise bad(key, f"must be > 0, got {getattr(self, key)}")
        for key in ("max_epoch", "max_update", "total_num_update", "warmup_updates", "num_workers",
                    "validate_every_updates", "validate_every_epochs", "save_every_updates", "save_every_epochs",
                    "drop_worst_after", "ignore_prefix_size", "ema_start_update"):
            if getattr(self, key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        if self.image_cache_mb < 0:
            raise bad("image_cache_mb", f"must be >= 0, got {self.image_cache_mb}")
        if self.image_feature_cache_mb < 0:
            raise bad("image_feature_cache_mb", f"must be >= 0, got {self.image_feature_cache_mb}")
        if self.image_feature_cache_mb and not self.freeze_resnet:
            raise bad("image_feature_cache_mb", "needs freeze_resnet: true (a trunk that trains changes its features)")
        from openofa.train.extensions import check_config

        check_config(self, bad)  # the keys read by criterion hooks (box_attention_*)
        if self.max_epoch == 0 and self.max_update == 0:
            raise bad("max_epoch", "set max_epoch or max_update (both are 0)")
        if self.lr <= 0:
            raise bad("lr", f"must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise bad("adam_betas", f"expected two numbers in [0, 1), got {self.adam_betas}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.drop_worst_ratio < 1.0:
            raise bad("drop_worst_ratio", f"must be in [0, 1), got {self.drop_worst_ratio}")
        if self.ema_decay and not 0.0 < self.ema_decay < 1.0:
            raise bad("ema_decay", f"must be in (0, 1) or 0 for off, got {self.ema_decay}")
        if not self.best_metric:
            raise bad("best_metric", "must name a metric")
        try:
            get_config(self.model)
        except OFAError as e:
            raise bad("model", str(e)) from None
        known = {f.name for f in fields(OFAConfig)}
        for key in self.model_config:
            if key not in known:
                raise bad(f"model_config.{key}", f"unknown OFAConfig field{_suggest(key, known)}")
        if self.petl is not None:
            from openofa.petl import methods_from

            try:
                methods_from(self.petl)
            except OFAError as e:
                raise bad("petl", str(e).removeprefix("petl: ")) from None
        elif self.export_merged:
            raise bad("export_merged", "applies to petl runs (a full finetune exports the whole model anyway)")
        if self.criterion not in CRITERIA:
            raise bad("criterion", f"{self.criterion!r} is not one of {', '.join(CRITERIA)}")
        if self.scst:
            from openofa.generation import GenerationConfig
            from openofa.train.clip_scst import CLIP_SCST_KEYS
            from openofa.train.scst import SCST_KEYS

            own = CLIP_SCST_KEYS if self.criterion == "clip_scst" else SCST_KEYS
            known_scst = set(GenerationConfig.__dataclass_fields__) | set(own)
            for key in self.scst:
                if key not in known_scst:
                    raise bad(f"scst.{key}", f"unknown option (GenerationConfig fields and "
                                             f"{', '.join(own)}){_suggest(key, known_scst)}")
            if self.criterion not in ("scst", "clip_scst"):
                raise bad("scst", "options for criterion scst or clip_scst, but the criterion is " + self.criterion)
        if self.mixture_ratio:
            if self.task != "mixture":
                raise bad("mixture_ratio", "applies to task: mixture")
            first = next(iter(self.mixture), None)
            for key, ratio in self.mixture_ratio.items():
                if key not in self.mixture:
                    raise bad(f"mixture_ratio.{key}", "not a task of mixture")
                if key == first:
                    raise bad(f"mixture_ratio.{key}", "the first mixture file sets the epoch; it takes all its rows")
                if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
                    raise bad(f"mixture_ratio.{key}", f"must be a number > 0, got {ratio!r}")
        if self.constraint_range is not None:
            from openofa.train.loss import parse_constraint_range

            try:
                parse_constraint_range(self.constraint_range)
            except OFAError as e:
                raise bad("constraint_range", str(e)) from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- reading files ------------------------------------------------------------------------------------------
def _suggest(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _yaml():
    try:
        import yaml
    except ImportError:
        return None
    return yaml


def read_mapping(path: str | Path) -> dict:
    """The top-level mapping of a YAML or JSON file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise OFAError(f"{path}: no such recipe") from None
    except OSError as e:
        raise OFAError(f"{path}: cannot read ({e.strerror})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise OFAError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    else:
        yaml = _yaml()
        if yaml is None:
            raise OFAError(f"{path}: reading YAML recipes needs PyYAML (pip install pyyaml); "
                           "or give the same keys as a .json file")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise OFAError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OFAError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def parse_scalar(text: str) -> Any:
    """A ``--set`` value: YAML scalar rules when PyYAML is there, else JSON, else the string."""
    yaml = _yaml()
    if yaml is not None:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """``key=value`` or ``section.key=value`` strings applied onto a recipe mapping."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise OFAError(f"--set {item!r}: expected key=value")
        key, _, raw = item.partition("=")
        key = key.strip()
        value = parse_scalar(raw)
        if "." in key:
            section, _, sub = key.partition(".")
            if section not in _MAPPING_FIELDS:
                raise OFAError(f"--set {key}: only {', '.join(sorted(_MAPPING_FIELDS))} take dotted keys")
            inner = dict(data.get(section) or {})
            inner[sub] = value
            data[section] = inner
        else:
            data[key] = value
    return data


_MAPPING_FIELDS = {"model_config", "data", "eval", "scst", "mixture", "mixture_ratio"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except OFAError as e:
                errors.append(e)
        raise OFAError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise OFAError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise OFAError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise OFAError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise OFAError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-5" (no dot) as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OFAError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise OFAError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise OFAError(f"{where}: unsupported field type {tp}")  # pragma: no cover


def config_from_mapping(data: Mapping[str, Any], source: str = "config") -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    known = [f.name for f in fields(TrainConfig)]
    values = {}
    for key, value in data.items():
        if key not in hints:
            raise OFAError(f"{source}: unknown key {key!r}{_suggest(str(key), known)}")
        values[key] = _coerce(value, hints[key], f"{source}: {key}")
    return TrainConfig(**values).validate(source)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a recipe file, apply ``key=value`` overrides, check it; errors name the file and key.
    A recipe with ``stages`` is read with :func:`load_stages`."""
    data = read_mapping(path)
    if "stages" in data:
        raise OFAError(f"{path}: has stages; read it with load_stages (ofa train runs them in order)")
    return config_from_mapping(apply_overrides(data, overrides), str(path))


def load_stages(path: str | Path, overrides: Sequence[str] = ()) -> list[TrainConfig]:
    """The configs of a recipe's stages, in order (a recipe without ``stages`` is one stage).

    ``stages`` is a list of mappings, each with a ``name`` and the recipe keys it sets on top of
    the rest of the file (mapping keys such as ``data`` are merged one level deep). Stage ``name``
    runs in ``<run_dir>/<name>`` and, unless it sets ``init_from``, starts from the previous
    stage's exported ``final`` weights with a fresh optimizer and schedule (the original's caption
    stage 1 -> stage 2, or a curriculum). ``--set`` overrides apply to every stage."""
    data = read_mapping(path)
    stages = data.pop("stages", None)
    if stages is None:
        return [config_from_mapping(apply_overrides(data, overrides), str(path))]
    if not isinstance(stages, list) or not stages or not all(isinstance(st, dict) for st in stages):
        raise OFAError(f"{path}: stages must be a non-empty list of mappings (each with a name)")
    run_dir = apply_overrides(data, overrides).get("run_dir", TrainConfig.run_dir)
    configs, names = [], []
    for i, stage in enumerate(stages):
        stage = dict(stage)
        name = stage.pop("name", None)
        where = f"{path}: stages[{i}]"
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            raise OFAError(f"{where}: needs a name usable as a folder name, got {name!r}")
        if name in names:
            raise OFAError(f"{where}: stage name {name!r} is used twice")
        for key in ("stages", "run_dir"):
            if key in stage:
                raise OFAError(f"{where}: {key} cannot be set per stage")
        merged = dict(data)
        for key, value in stage.items():
            if key in _MAPPING_FIELDS and isinstance(merged.get(key), dict) and isinstance(value, dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        if names and "init_from" not in stage:
            merged["init_from"] = f"{run_dir}/{names[-1]}/final"
        merged = apply_overrides(merged, overrides)
        merged["run_dir"] = f"{run_dir}/{name}"
        configs.append(config_from_mapping(merged, f"{path} (stage {name})"))
        names.append(name)
    return configs


def recipes_dir() -> Path | None:
    """The repository's ``recipes/`` folder, when running from a checkout."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "recipes"
        if cand.is_dir() and any(cand.glob("*.yaml")):
            return cand
    return None


def find_recipe(name: str | Path) -> Path:
    """A recipe path, or a bare name (``caption_base``) looked up in the repository's recipes/."""
    path = Path(name)
    if path.exists():
        return path
    folder = recipes_dir()
    if folder is not None and path.parent == Path("."):
        for cand in (folder / f"{name}.yaml", folder / f"{name}.json", folder / str(name)):
            if cand.is_file():
                return cand
    raise OFAError(f"{name}: no such recipe file")
