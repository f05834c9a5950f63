"""Many processes: set-up from torchrun's environment, DDP or FSDP wrapping, collective helpers,
and activation checkpointing (a memory option that lives here with the other scaling tools).

There is no launcher of our own. One process needs nothing; many are started by torchrun::

    torchrun --nproc_per_node 8 -m openofa.train.cli recipes/caption_large.yaml
    torchrun --nnodes 4 --node_rank $RANK --nproc_per_node 8 \\
             --rdzv_backend c10d --rdzv_endpoint $MASTER_ADDR:29500 -m openofa.train.cli ...

which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The
backend is NCCL when CUDA is used, gloo on CPU.

* **DDP** (default): every process holds the whole model; gradients are averaged after the last
  micro-batch of an update (``no_sync`` before). ``find_unused_parameters`` is on by default, as in
  the original scripts: text-only batches leave the ResNet trunk without gradients.
* **FSDP** (``parallel: fsdp``, for large/huge): ``torch.distributed.fsdp.fully_shard`` on every
  encoder layer, decoder layer and ResNet stage, then on the whole model (which keeps the
  embeddings, position tables and the rest). Parameters, gradients and AdamW state are sharded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import types
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from openofa.device import resolve_device
from openofa.errors import OFAError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise OFAError(f"environment variable {name}={value!r} is not an integer") from None


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed(device: str = "auto", need_group: bool = False) -> DistInfo:
    """Read torchrun's environment; start the process group when ``WORLD_SIZE`` > 1, or when
    ``need_group`` (FSDP) even for one process (a private one on localhost outside torchrun)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    info = DistInfo(rank, world, local_rank, dev)
    if dist.is_initialized():
        info.rank, info.world_size = dist.get_rank(), dist.get_world_size()
        return info
    if world > 1 or need_group:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
            dist.init_process_group(backend=backend, **kwargs)
        elif world > 1:
            raise OFAError(f"WORLD_SIZE={world} but MASTER_ADDR / MASTER_PORT are not set; start many processes "
                           "with torchrun")
        else:
            dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                                    world_size=1, **kwargs)
        info.initialized_here = True
    return info


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


# ---- collectives (no-ops in one process) --------------------------------------------------------
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def all_gather_object(obj: Any) -> list:
    if dist.is_initialized() and dist.get_world_size() > 1:
        out: list = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ---- wrapping ----------------------------------------------------------------------------------
PARALLEL = ("ddp", "fsdp")


def unwrap(model: nn.Module) -> nn.Module:
    """The OFAModel inside a DDP wrapper (FSDP shards in place, so it is the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def is_fsdp(model: nn.Module) -> bool:
    # if FSDP was never imported nothing can be sharded (and importing it costs seconds)
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def wrap_model(model: nn.Module, info: DistInfo, *, parallel: str = "ddp", find_unused_parameters: bool = True,
               sync_bn: bool = False) -> nn.Module:
    """DDP or FSDP around ``model`` (already on ``info.device``); the model itself in one process
    (FSDP is applied in one process too, so a run can be checked before it is spread out)."""
    if parallel not in PARALLEL:
        raise OFAError(f"unknown parallel mode {parallel!r}; expected one of {', '.join(PARALLEL)}")
    if sync_bn and info.distributed:
        if info.device.type != "cuda":
            raise OFAError("sync_bn needs CUDA devices")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if parallel == "fsdp":
        return shard_model(model, info)
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def _cross_project(layer: nn.Module, h: torch.Tensor):
    att = layer.encoder_attn
    return type(att).project_kv(att, h)


def shard_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``fully_shard`` per encoder layer, decoder layer and ResNet stage, then the root.

    The decoder computes the cross-attention keys/values of each layer (``encoder_attn.project_kv``)
    outside the layer's ``forward``; that call is routed through a method of the layer registered
    with FSDP, so the layer's parameters are gathered for it too."""
    if not dist.is_initialized():
        raise OFAError("parallel: fsdp needs a process group: start the run with torchrun, or call "
                       "init_distributed(need_group=True) first")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    trunk = model.encoder.embed_images
    # FSDP shards flat storage; the trunk's channels-last convolution weights must be contiguous
    trunk.to(memory_format=torch.contiguous_format)
    for stage in (trunk.layer1, trunk.layer2, trunk.layer3):
        fully_shard(stage, mesh=mesh)
    for layer in model.encoder.layers:
        fully_shard(layer, mesh=mesh)
    for layer in model.decoder.layers:
        fully_shard(layer, mesh=mesh)
        layer.cross_project = types.MethodType(_cross_project, layer)
        register_fsdp_forward_method(layer, "cross_project")
        layer.encoder_attn.project_kv = layer.cross_project
    fully_shard(model, mesh=mesh)
    for name in ("encode", "decode", "init_cache", "decode_step"):
        register_fsdp_forward_method(model, name)
    # project_kv returns views of one projection; nothing modifies them in place
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    return model


def no_grad_sync(model: nn.Module):
    """Context for the micro-batches before the last one of an update: no gradient exchange."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if is_fsdp(model):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


# ---- activation checkpointing -----------------------------------------------------------------------
def _checkpointed_forward(layer: nn.Module, *args: Any, **kwargs: Any):
    forward = functools.partial(type(layer).forward, layer)
    if layer.training and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each encoder and decoder layer in the backward pass instead of keeping its
    activations. Done by replacing each layer's ``forward`` on the instance, so module names and
    state-dict keys stay the same; generation and evaluation (no grad) run the plain forward.
    Dropout masks are replayed exactly (the RNG state is saved with each checkpoint).
    Returns the number of layers wrapped."""
    layers = list(model.encoder.layers) + list(model.decoder.layers)
    for layer in layers:
        layer.forward = types.MethodType(_checkpointed_forward, layer)
    return len(layers)
