"""The training loop.

One *update* = ``update_freq`` micro-batches per process. Each micro-batch's loss is the *sum*
over its target tokens; after the last micro-batch the token counts of all micro-batches and
processes are added up and the gradients are divided by that total (fairseq's normalisation,
so one process with batch 8 and four with batch 2 take the same step). Then: gradient
clipping, the AdamW step (skipped, and not counted, when fp16 loss scaling overflows), the lr
schedule, the EMA.

Reproducibility: before each update the torch generator is seeded from (seed, update, rank), as
fairseq does with ``seed + num_updates``; the order of examples is a function of (seed, epoch)
(see ``batches.py``); validation and exports run with the generators saved and restored. So a
run that is killed and resumed from ``last.pt`` takes exactly the same steps as one that was not.

Validation calls ``evaluate(model) -> dict[str, float]`` (default: label-smoothed loss on the
validation data) on every process; the metrics of rank 0 count. ``best_metric`` of the config
names the entry to compare (``maximize_best`` for accuracy-like metrics); the best weights are
exported to ``<run_dir>/best/``.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from openofa.errors import OFAError
from openofa.train import batches as B
from openofa.train.checkpoint import (FORMAT, FORMAT_VERSION, apply_state, atomic_torch_save, capture_rng,
                                      export_adapter, export_merged, export_weights, gather_state, load_training_checkpoint, preserved_rng,
                                      restore_rng)
from openofa.train.distributed import (DistInfo, all_gather_object, all_reduce_sum, barrier, broadcast_object,
                                       enable_activation_checkpointing, init_distributed, is_fsdp, no_grad_sync,
                                       unwrap, wrap_model)
from openofa.train.feature_cache import FeatureStore, attach_feature_cache
from openofa.train.logs import RunLog
from openofa.train.loss import LabelSmoothedCrossEntropy, LossOutput
from openofa.train.optim import (EMA, PolynomialDecaySchedule, apply_freezing, build_optimizer, clip_grad_norm,
                                 lr_scale_groups, multiply_grads, set_train_mode, trainable_parameters,
                                 warmup_steps)
from openofa.train.recipe import TrainConfig

Evaluate = Callable[[nn.Module], Mapping[str, float]]
Hook = Callable[["Trainer"], None]

_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def move_to(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: move_to(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], torch.Tensor):
        return type(obj)(move_to(v, device, non_blocking) for v in obj)
    return obj


def _update_seed(seed: int, update: int, rank: int) -> int:
    return (seed * 1_000_003 + update * 7_919 + rank) % (2 ** 63 - 1)


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 1
    step_in_epoch: int = 0  # micro-batches of this epoch already consumed (per process)
    num_updates: int = 0
    best: float | None = None
    best_update: int = 0
    last_validated: int = -1
    finished: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Accum:
    """Sums over the micro-batches of the update in progress (this process)."""

    sample_size: int = 0
    ntokens: int = 0
    nsentences: int = 0
    losses: list = field(default_factory=list)  # tensors: no device sync per micro-batch
    nlls: list = field(default_factory=list)
    sums: dict = field(default_factory=dict)  # the criterion's extra per-sentence sums

    def add(self, out: LossOutput) -> None:
        self.losses.append(out.loss.detach().double())
        self.nlls.append(out.nll_loss.double())
        self.sample_size += out.sample_size
        self.ntokens += out.ntokens
        self.nsentences += out.nsentences
        for k, v in out.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)


def build_criterion(cfg: TrainConfig, model_config, train_data: Any,
                    cross_entropy: LabelSmoothedCrossEntropy | None = None):
    """The training criterion a config names: ``label_smoothed_cross_entropy`` (default) or
    ``scst`` (self-critical CIDEr optimisation, :mod:`openofa.train.scst`). The cross-entropy goes
    through every registered criterion hook, which adds its loss terms when the config turns it
    on (:mod:`openofa.train.extensions`)."""
    if cfg.criterion == "scst":
        from openofa.train.scst import SelfCriticalCriterion

        return SelfCriticalCriterion.from_config(cfg, model_config, train_data)
    if cfg.criterion == "clip_scst":  # text-to-image stage 2
        from openofa.train.clip_scst import ClipRewardCriterion

        return ClipRewardCriterion.from_config(cfg, model_config, train_data)
    from openofa.train.extensions import criterion_hooks

    criterion = cross_entropy if cross_entropy is not None else cross_entropy_for(cfg, model_config)
    for hook in criterion_hooks():
        criterion = hook.extend(cfg, model_config, criterion)
    return criterion


def cross_entropy_for(cfg: TrainConfig, model_config) -> LabelSmoothedCrossEntropy:
    """The original's label-smoothed cross-entropy with a config's settings."""
    return LabelSmoothedCrossEntropy(
        cfg.label_smoothing, pad=model_config.pad, eos=model_config.eos, ignore_prefix_size=cfg.ignore_prefix_size,
        ignore_eos=cfg.ignore_eos, drop_worst_ratio=cfg.drop_worst_ratio, drop_worst_after=cfg.drop_worst_after,
        constraint_range=cfg.constraint_range)


class LossEvaluator:
    """The default ``evaluate``: the training criterion (no drop-worst) on the validation data.
    Runs on every process over its share of the data; sums are added up across processes."""

    def __init__(self, dataset: Any, collate_fn: Callable, criterion: LabelSmoothedCrossEntropy, *,
                 batch_size: int, device: torch.device, precision: str = "fp32", num_workers: int = 0,
                 info: DistInfo | None = None) -> None:
        self.dataset, self.collate_fn, self.criterion = dataset, collate_fn, criterion
        self.batch_size, self.device, self.precision = batch_size, device, precision
        self.num_workers = num_workers
        self.info = info or DistInfo()

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        order = np.arange(len(self.dataset))
        batches = B.shard_batches(order, self.batch_size, self.info.world_size, self.info.rank)
        loader = B.make_loader(self.dataset, batches, self.collate_fn, seed=0, epoch=0,
                               num_workers=self.num_workers, seeded=False)
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        dtype = _AUTOCAST[self.precision]
        for batch in loader:
            dummy = batch.pop("dummy", False)
            batch = move_to(batch, self.device)
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = model(**_net_input(model, batch))
            out = self.criterion(logits, batch, update_num=0)
            if not dummy:
                sums += torch.tensor([float(out.loss), float(out.nll_loss), out.sample_size],
                                     dtype=torch.float64, device=self.device)
        all_reduce_sum(sums)
        n = max(float(sums[2]), 1.0)
        return {"loss": float(sums[0]) / n, "nll_loss": float(sums[1]) / n}


_FORWARD_KEYS: dict[type, set[str]] = {}


def _net_input(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The ``net_input`` entries the model's forward takes (the collater may add others)."""
    inner = unwrap(model)
    keys = _FORWARD_KEYS.get(type(inner))
    if keys is None:
        keys = set(inspect.signature(type(inner).forward).parameters) - {"self"}
        _FORWARD_KEYS[type(inner)] = keys
    return {k: v for k, v in batch["net_input"].items() if k in keys}


class Trainer:
    """Train ``model`` on ``train_data`` with the settings of ``cfg`` (see :class:`TrainConfig`).

    ``train_data``/``valid_data``: map-style datasets whose items ``collate_fn`` (default: the
    dataset's ``collater``) turns into batches of the collater contract. ``evaluate``: see the
    module docstring. ``hooks``: called as ``hook(trainer)`` after every update (tests use one to
    kill the process). ``feature_memory``: where ``image_feature_cache_mb`` keeps the trunk's
    features; pass the previous stage's to reuse them (kept only if the trunk is the same)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, train_data: Any, *, valid_data: Any = None,
                 collate_fn: Callable | None = None, evaluate: Evaluate | None = None,
                 criterion: LabelSmoothedCrossEntropy | None = None, hooks: Iterable[Hook] = (),
                 dist_info: DistInfo | None = None, feature_memory: FeatureStore | None = None) -> None:
        self.cfg = cfg
        self.info = dist_info or init_distributed(cfg.device, need_group=cfg.parallel == "fsdp")
        self.device = self.info.device
        self.run_dir = Path(cfg.run_dir)
        self.hooks = list(hooks)
        self.train_data = train_data
        if len(train_data) == 0:
            raise OFAError("the training data is empty")
        self.collate_fn = collate_fn or B.default_collate_fn(train_data)
        mcfg = model.config
        self.model_config = mcfg
        # the cross-entropy also scores the validation data when there is no task metric
        self.cross_entropy = cross_entropy_for(cfg, mcfg)
        self.criterion = criterion or build_criterion(cfg, mcfg, train_data, self.cross_entropy)
        # a criterion with runs_model (SCST) is called as criterion(model, batch, update) and runs
        # the model itself; the others get the logits
        self.criterion_runs_model = bool(getattr(self.criterion, "runs_model", False))
        self.log_keys = tuple(getattr(self.criterion, "log_keys", ()))
        # a logged key is a mean per sentence, or per another of the criterion's sums (log_per)
        self.log_per = dict(getattr(self.criterion, "log_per", {}))
        self.log_hidden = set(getattr(self.criterion, "hidden_log_keys", ()))
        # a criterion that reads a decoder layer's cross-attention gets (logits, attention)
        self.cross_attention_layer = getattr(self.criterion, "cross_attention_layer", None)

        # ---- model, optimizer, schedule ----------------------------------------------------------
        apply_freezing(model, freeze_embedding=cfg.freeze_embedding, freeze_resnet=cfg.freeze_resnet,
                       freeze_bn=cfg.freeze_bn)
        # parameter-efficient tuning: only the methods' weights train, and the frozen trunk's batch
        # norms keep their running statistics
        self.freeze_resnet = cfg.freeze_resnet or cfg.petl is not None
        if cfg.petl is not None:
            from openofa.petl import freeze_except, trainable_names

            freeze_except(model, trainable_names(model, cfg.petl))
        model.to(self.device)
        self.feature_cache = attach_feature_cache(model, cfg.image_feature_cache_mb, feature_memory) \
            if cfg.image_feature_cache_mb else None
        if cfg.activation_checkpointing:
            enable_activation_checkpointing(model)
        self.model = wrap_model(model, self.info, parallel=cfg.parallel,
                                find_unused_parameters=cfg.find_unused_parameters, sync_bn=cfg.sync_bn)
        self.module = unwrap(self.model)
        self.fsdp = is_fsdp(self.model)
        if self.fsdp and self.criterion_runs_model:
            raise OFAError(f"criterion {cfg.criterion} generates with the model between updates, which "
                           "parallel: fsdp does not support here; use parallel: ddp")
        self.params = trainable_parameters(self.model)
        groups = self.params
        if cfg.lr_scale:
            if self.fsdp:
                raise OFAError("lr_scale needs parallel: ddp (FSDP flattens the parameters it would scale)")
            groups = lr_scale_groups(((n, p) for n, p in self.module.named_parameters() if p.requires_grad),
                                     cfg.lr_scale)
        self.optimizer = build_optimizer(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                                         weight_decay=cfg.weight_decay)
        n = len(train_data)
        self.micro_per_epoch = B.micro_batches_per_epoch(n, cfg.batch_size, self.info.world_size)
        self.updates_per_epoch = B.updates_per_epoch(n, cfg.batch_size, self.info.world_size, cfg.update_freq)
        if cfg.total_num_update:
            total = cfg.total_num_update
        elif cfg.max_epoch:
            total = cfg.max_epoch * self.updates_per_epoch
        else:
            total = cfg.max_update
        self.total_updates = total
        self.scheduler = PolynomialDecaySchedule(
            self.optimizer, lr=cfg.lr, total_updates=total,
            warmup_updates=warmup_steps(total, cfg.warmup_ratio, cfg.warmup_updates), end_lr=cfg.end_lr,
            power=cfg.lr_power)
        self.autocast_dtype = _AUTOCAST[cfg.precision]
        self.scaler = None
        if cfg.precision == "fp16":
            if self.fsdp:
                from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

                self.scaler = ShardedGradScaler(self.device.type, init_scale=cfg.fp16_init_scale,
                                                growth_interval=cfg.fp16_scale_window)
            else:
                self.scaler = torch.amp.GradScaler(self.device.type, init_scale=cfg.fp16_init_scale,
                                                   growth_interval=cfg.fp16_scale_window)
        self.ema = None
        self._ema_model = None
        if cfg.ema_decay:
            if self.fsdp:
                raise OFAError("ema_decay with parallel: fsdp is not supported; use ddp or set ema_decay: 0")
            self.ema = EMA(self.module, cfg.ema_decay, cfg.ema_start_update)

        # ---- validation ----------------------------------------------------------------------------
        if evaluate is None and valid_data is not None:
            ce = self.criterion if not self.criterion_runs_model else self.cross_entropy
            evaluate = LossEvaluator(valid_data, collate_fn or B.default_collate_fn(valid_data), ce,
                                     batch_size=cfg.batch_size, device=self.device, precision=cfg.precision,
                                     num_workers=cfg.num_workers, info=self.info)
            if cfg.best_metric not in ("loss", "nll_loss"):
                raise OFAError(f"best_metric {cfg.best_metric!r} needs a task evaluation; the default "
                               "validation gives only loss and nll_loss")
        self.evaluate = evaluate

        self.progress = Progress()
        self.log = RunLog(self.run_dir if self.info.is_main else None, tensorboard=cfg.tensorboard,
                          progress=cfg.progress)
        self._window = self._new_window()
        self.last_stats: dict[str, float] = {}
        self._spare: dict | None = None

    # ---- checkpoints -------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "last.pt"

    def _data_signature(self) -> dict:
        order = B.epoch_permutation(len(self.train_data), self.cfg.seed, self.progress.epoch)
        return {"seed": self.cfg.seed, "num_examples": len(self.train_data),
                "global_batch": self.cfg.batch_size * self.info.world_size, "update_freq": self.cfg.update_freq,
                "world_size": self.info.world_size, "order": B.order_fingerprint(order)}

    def save_checkpoint(self) -> Path:
        """Write ``last.pt`` (collective under FSDP; rank 0 writes)."""
        msd, osd = gather_state(self.model if self.fsdp else self.module, self.optimizer)
        rng = all_gather_object(capture_rng())
        if self.info.is_main:
            ckpt = {
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "model": msd, "optimizer": osd, "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": rng, "progress": self.progress.to_dict(), "data": self._data_signature(),
                "train_config": self.cfg.to_dict(), "model_config": self.model_config.to_dict(),
            }
            atomic_torch_save(ckpt, self.checkpoint_path)
        barrier()
        return self.checkpoint_path

    def _resume_decision(self) -> bool:
        exists = broadcast_object(self.checkpoint_path.is_file() if self.info.is_main else None)
        mode = self.cfg.resume
        if mode == "always" and not exists:
            raise OFAError(f"{self.checkpoint_path}: no checkpoint to resume from")
        if mode == "never" and exists:
            raise OFAError(f"{self.run_dir} already holds a run (last.pt); resume it or choose another run_dir")
        return exists

    def resume(self) -> bool:
        """Load ``last.pt`` if the config says so; True when a run was resumed."""
        if not self._resume_decision():
            return False
        path = self.checkpoint_path
        if not path.is_file():
            raise OFAError(f"{path}: rank {self.info.rank} cannot see the checkpoint; put run_dir on storage "
                           "that every machine shares")
        ckpt = load_training_checkpoint(path)
        self._check_compatible(ckpt, path)
        apply_state(self.model if self.fsdp else self.module, self.optimizer, ckpt["model"], ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema"):
                self.ema.load_state_dict(ckpt["ema"])
            else:  # EMA switched on for a run that had none: start it from the weights
                self.ema = EMA(self.module, self.cfg.ema_decay, self.cfg.ema_start_update)
        self.progress = Progress(**ckpt["progress"])
        rng = ckpt["rng"]
        restore_rng(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])
        self.scheduler.step(self.progress.num_updates)
        self.log.truncate_after(self.progress.num_updates)
        self.log.echo(f"resumed from {path}: epoch {self.progress.epoch}, update {self.progress.num_updates}")
        return True

    def _check_compatible(self, ckpt: dict, path: Path) -> None:
        saved = ckpt.get("data", {})
        mine = self._data_signature()
        mine_order = B.order_fingerprint(B.epoch_permutation(len(self.train_data), self.cfg.seed,
                                                             int(ckpt["progress"]["epoch"])))
        checks = [("num_examples", "training examples"), ("seed", "seed"),
                  ("global_batch", "examples per micro-batch over all processes (batch_size x processes)"),
                  ("update_freq", "update_freq")]
        for key, what in checks:
            if saved.get(key) != mine[key]:
                raise OFAError(f"{path}: the run was started with {what} = {saved.get(key)}, this one has "
                               f"{mine[key]}; the remaining batches would differ (use the same settings or a new run_dir)")
        if saved.get("order") != mine_order:
            raise OFAError(f"{path}: the order of examples differs from the saved run's (changed dataset?)")
        saved_model, mine_model = ckpt.get("model_config") or {}, self.model_config.to_dict()
        differ = sorted(k for k in set(saved_model) | set(mine_model) if saved_model.get(k) != mine_model.get(k))
        if differ:
            raise OFAError(f"{path}: the saved run's model config differs from this one in {', '.join(differ)}")

    # ---- one update -------------------------------------------------------------------------------------
    def _autocast(self):
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _micro_step(self, batch: dict, acc: _Accum, sync: bool) -> None:
        dummy = bool(batch.pop("dummy", False))
        if "net_input" not in batch:  # every example of this micro-batch was a bad row (skipped)
            if self._spare is None:
                if self.info.distributed:
                    raise OFAError("a micro-batch made only of bad rows came before any good one; other "
                                   "processes would wait for this one (fix the data or use on_error: raise)")
                return
            batch, dummy = dict(self._spare), True
        elif not dummy:
            self._spare = batch  # stands in (with zero weight) for a later micro-batch of only bad rows
        batch = move_to(batch, self.device, non_blocking=self.device.type == "cuda")
        ctx = contextlib.nullcontext() if sync else no_grad_sync(self.model)
        with ctx:
            if self.criterion_runs_model:
                with self._autocast():
                    out = self.criterion(self.model, batch, self.progress.num_updates)
            else:
                net_input = _net_input(self.model, batch)
                if self.cross_attention_layer is not None:
                    net_input["cross_attention_layer"] = self.cross_attention_layer
                with self._autocast():
                    logits = self.model(**net_input)
                out = self.criterion(logits, batch, self.progress.num_updates)
            loss = out.loss * 0.0 if dummy else out.loss
            if self.scaler is not None:
                loss = self.scaler.scale(loss)
            loss.backward()
        if not dummy:
            acc.add(out)

    def _finish_update(self, acc: _Accum) -> dict[str, float]:
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        loss_sum = torch.stack(acc.losses).sum() if acc.losses else zero
        nll_sum = torch.stack(acc.nlls).sum() if acc.nlls else zero
        counts = torch.tensor([acc.sample_size, acc.ntokens, acc.nsentences]
                              + [acc.sums.get(k, 0.0) for k in self.log_keys], dtype=torch.float64)
        stats = torch.cat([torch.stack([loss_sum, nll_sum]), counts.to(self.device)])
        all_reduce_sum(stats)
        loss_sum, nll_sum, sample_size, ntokens, nsentences, *extra = (float(v) for v in stats.tolist())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        # DDP/FSDP average gradients over processes; we want the sum over all tokens / tokens
        multiply_grads(self.params, self.info.world_size / (sample_size or 1.0))
        gnorm = clip_grad_norm(self.params, self.cfg.clip_norm)
        skipped = False
        if self.scaler is not None:
            before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler.get_scale() < before
        else:
            if not math.isfinite(gnorm):
                raise OFAError(f"gradients are NaN/Inf at update {self.progress.num_updates + 1}; "
                               "lower lr or use bf16 instead of fp16")
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_lr()
        if not skipped:
            self.progress.num_updates += 1
            self.scheduler.step(self.progress.num_updates)
            if self.ema is not None:
                self.ema.step(self.module, self.progress.num_updates)
        n = sample_size or 1.0
        sums = dict(zip(self.log_keys, extra))
        return {"loss": loss_sum / n, "nll_loss": nll_sum / n, "sample_size": sample_size, "ntokens": ntokens,
                "nsentences": nsentences, "gnorm": gnorm, "lr": lr, "skipped": skipped,
                "loss_scale": self.scaler.get_scale() if self.scaler is not None else None,
                "log_sums": sums, **self._log_means(sums, nsentences)}

    def _log_means(self, sums: dict[str, float], nsentences: float) -> dict[str, float]:
        """The criterion's logged sums as means: per sentence, or per the sum ``log_per`` names
        (left out when that is 0: no sample of that kind in the window)."""
        means = {}
        for k, v in sums.items():
            if k in self.log_hidden:
                continue
            n = sums.get(self.log_per[k], 0.0) if k in self.log_per else nsentences
            if n:
                means[k] = v / n
        return means

    # ---- logging ----------------------------------------------------------------------------------------
    def _new_window(self) -> dict:
        return {"loss": 0.0, "nll": 0.0, "sample_size": 0.0, "ntokens": 0.0, "nsentences": 0.0, "gnorm": 0.0,
                "updates": 0, "start": time.perf_counter(), "sums": {}}

    def _log_update(self, s: dict[str, float]) -> None:
        self.last_stats = s
        if s["skipped"]:  # fp16 overflow: no step was taken; say so and keep it out of the averages
            self.log.train({"epoch": self.progress.epoch, "update": self.progress.num_updates, "overflow": 1,
                            "loss_scale": s["loss_scale"]})
            return
        w = self._window
        w["loss"] += s["loss"] * s["sample_size"]
        w["nll"] += s["nll_loss"] * s["sample_size"]
        for k in ("sample_size", "ntokens", "nsentences"):
            w[k] += s[k]
        w["gnorm"] += s["gnorm"]
        w["updates"] += 1
        for k, v in s["log_sums"].items():
            w["sums"][k] = w["sums"].get(k, 0.0) + v
        self.log.tick(loss=f"{s['loss']:.3f}", lr=f"{s['lr']:.2e}")
        if self.progress.num_updates % self.cfg.log_every:
            return
        secs = max(time.perf_counter() - w["start"], 1e-9)
        n = w["sample_size"] or 1.0
        row = {"epoch": self.progress.epoch, "update": self.progress.num_updates, "loss": w["loss"] / n,
               "nll_loss": w["nll"] / n, "lr": s["lr"], "gnorm": w["gnorm"] / max(w["updates"], 1),
               "ups": w["updates"] / secs, "wps": w["ntokens"] / secs, "sps": w["nsentences"] / secs,
               "sample_size": w["sample_size"], "ntokens": w["ntokens"],
               **self._log_means(w["sums"], w["nsentences"])}
        if s["loss_scale"] is not None:
            row["loss_scale"] = s["loss_scale"]
        if self.device.type == "cuda":
            row["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
        self.log.train(row)
        self._window = self._new_window()

    # ---- validation and exports ----------------------------------------------------------------------------
    def _eval_model(self) -> nn.Module:
        if self.ema is not None and self.cfg.validate_with_ema:
            if self._ema_model is None:
                self._ema_model = copy.deepcopy(self.module)
            self._ema_model.load_state_dict(self.ema.full_state_dict())
            return self._ema_model
        return self.model if self.fsdp else self.module

    def validate(self) -> dict[str, float] | None:
        """Run ``evaluate``; keep the best weights. Returns rank 0's metrics (None without evaluate)."""
        if self.evaluate is None:
            return None
        p = self.progress
        model = self._eval_model()
        with preserved_rng():
            torch.manual_seed(self.cfg.validation_seed)
            model.eval()
            try:
                with torch.no_grad():
                    metrics = self.evaluate(model)
            finally:
                set_train_mode(self.module, freeze_resnet=self.freeze_resnet, freeze_bn=self.cfg.freeze_bn)
        metrics = broadcast_object({k: float(v) for k, v in dict(metrics).items()} if self.info.is_main else None)
        key = self.cfg.best_metric
        if key not in metrics:
            raise OFAError(f"best_metric {key!r} is not among the evaluation's metrics ({', '.join(metrics)})")
        value = metrics[key]
        better = p.best is None or (value > p.best if self.cfg.maximize_best else value < p.best)
        p.last_validated = p.num_updates
        if better and math.isfinite(value):
            p.best, p.best_update = value, p.num_updates
            self.export(self.run_dir / "best", model)
        self.log.valid({"epoch": p.epoch, "update": p.num_updates, **metrics, f"best_{key}": p.best})
        return metrics

    def export(self, folder: Path, model: nn.Module | None = None) -> Path:
        """Weights of ``model`` (default: the one being trained) as a ``save_pretrained`` folder;
        with ``petl``, an adapter folder of the methods' weights only."""
        model = model if model is not None else (self.model if self.fsdp else self.module)
        with preserved_rng():
            sd, _ = gather_state(model, None)
            if self.info.is_main:
                if self.cfg.petl is not None:
                    export_adapter(folder, self.cfg, unwrap(model), sd)
                else:
                    export_weights(folder, self.model_config, sd)
        barrier()
        return folder

    # ---- the loop ------------------------------------------------------------------------------------------------
    def _done(self) -> bool:
        p, cfg = self.progress, self.cfg
        if cfg.max_update and p.num_updates >= cfg.max_update:
            return True
        return bool(cfg.max_epoch) and p.epoch > cfg.max_epoch

    def _train_epoch(self) -> None:
        cfg, p = self.cfg, self.progress
        order = B.epoch_permutation(len(self.train_data), cfg.seed, p.epoch)
        batches = B.shard_batches(order, cfg.batch_size, self.info.world_size, self.info.rank)
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(p.epoch)
        start = p.step_in_epoch
        done_updates = -(-start // cfg.update_freq)
        self.log.open_bar(p.epoch, self.updates_per_epoch, done_updates)
        if start < len(batches):
            loader = B.make_loader(self.train_data, batches[start:], self.collate_fn, seed=cfg.seed, epoch=p.epoch,
                                   num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                                   seeded=cfg.seeded_examples)
            acc = None
            for i, batch in enumerate(loader, start=start):
                first = i % cfg.update_freq == 0
                last = (i + 1) % cfg.update_freq == 0 or i + 1 == len(batches)
                if first:
                    torch.manual_seed(_update_seed(cfg.seed, p.num_updates, self.info.rank))
                    acc = _Accum()
                self._micro_step(batch, acc, sync=last)
                if not last:
                    continue
                p.step_in_epoch = i + 1
                stats = self._finish_update(acc)
                self._log_update(stats)
                self._after_update(stats)
                if self._done():
                    break
        self.log.close_bar()
        if p.step_in_epoch >= len(batches):
            self._end_epoch()

    def _after_update(self, stats: dict) -> None:
        cfg, p = self.cfg, self.progress
        if not stats["skipped"]:
            if cfg.validate_every_updates and p.num_updates % cfg.validate_every_updates == 0:
                self.validate()
            if cfg.save_every_updates and p.num_updates % cfg.save_every_updates == 0:
                self.save_checkpoint()
        for hook in self.hooks:
            hook(self)

    def _end_epoch(self) -> None:
        cfg, p = self.cfg, self.progress
        ended = p.epoch
        if cfg.validate_every_epochs and ended % cfg.validate_every_epochs == 0 and p.last_validated != p.num_updates:
            self.validate()
        p.epoch += 1
        p.step_in_epoch = 0
        if cfg.save_every_epochs and ended % cfg.save_every_epochs == 0 and not self._done():
            self.save_checkpoint()

    def fit(self) -> dict[str, Any]:
        """Train until ``max_epoch`` / ``max_update``; returns a summary. Resumes per ``cfg.resume``."""
        cfg = self.cfg
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        set_train_mode(self.module, freeze_resnet=self.freeze_resnet, freeze_bn=cfg.freeze_bn)
        self.resume()
        p = self.progress
        if p.finished and self._done():
            self.log.echo(f"{self.run_dir}: this run is finished (update {p.num_updates}); nothing to do")
        else:
            p.finished = False  # a finished run continues when max_epoch / max_update were raised
            self.log.echo(f"training {type(self.module).__name__}: {sum(x.numel() for x in self.params):,} "
                          f"trainable parameters, {self.info.world_size} process(es) on {self.device.type}, "
                          f"{self.updates_per_epoch} updates/epoch, lr decay over {self.total_updates} updates")
            try:
                while not self._done():
                    self._train_epoch()
            finally:
                self.log.close_bar()
            if self.feature_cache is not None:
                c = self.feature_cache
                self.log.echo(f"image feature cache: {c.hits:,} hits, {c.misses:,} misses, "
                              f"{len(c.store):,} images in {c.bytes / 2**20:.0f} MiB"
                              + (" (started from the previous stage's)" if c.reused else ""))
            if p.last_validated != p.num_updates and (cfg.validate_every_updates or cfg.validate_every_epochs):
                self.validate()
            p.finished = True
            self.export(self.run_dir / "final")
            if cfg.export_merged and self.info.is_main:
                export_merged(self.run_dir / "final_merged", self.module)
            barrier()
            if self.ema is not None:
                ema_model = copy.deepcopy(self.module)
                ema_model.load_state_dict(self.ema.full_state_dict())
                self.export(self.run_dir / "final_ema", ema_model)
            self.save_checkpoint()
        self.log.close()
        return {"run_dir": str(self.run_dir), "rank": self.info.rank, "epoch": p.epoch, "num_updates": p.num_updates, "best": p.best,
                "best_update": p.best_update, "best_metric": cfg.best_metric, "last": dict(self.last_stats)}
