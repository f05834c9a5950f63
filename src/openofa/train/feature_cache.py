"""Keep a frozen image trunk's features in memory, so each training image runs through it once.

With ``freeze_resnet: true`` the trunk is a fixed function of the image tensor, and when the
data's image transform is deterministic (the scenes recipe, any fixed resize) the same tensors
come back every epoch and in every task of a mixture: their features can be remembered instead
of recomputed. ``image_feature_cache_mb: N`` in a recipe does that, up to N MiB of features.

The key is the image tensor's bytes (Python's 64-bit hash of them, with the shape), so a cached
result is only ever returned for the very same pixels: a randomly augmented image simply misses.
Nothing is approximated; a batch with any miss runs the trunk on the missing images only, one
image at a time (so an image's features have the same bits in every batch, process and resume).
Features stay on the model's device (on a GPU they take GPU memory; the hash reads the pixels
on the CPU).

The stages of a recipe run in one process: :class:`FeatureStore` carries the remembered features
from one stage to the next, and a stage adopts them only when its trunk's weights are the very
same (a digest of the trunk's parameters and buffers); otherwise it starts empty.

Why not precompute the features into a file: the cache needs no extra command, works for every
task, data layout and mixture the trainer reads, and cannot go stale when the data or the trunk
changes, since it lives only as long as the run.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def trunk_digest(trunk: nn.Module) -> str:
    """A digest of the trunk's parameters and buffers (names, shapes, dtypes and values)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in trunk.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FeatureStore:
    """The remembered features themselves, for one trunk's weights: shared by the caches of the
    stages of one recipe (see the module doc)."""

    def __init__(self) -> None:
        self.digest: str | None = None
        self.entries: dict[tuple, torch.Tensor] = {}
        self.bytes = 0

    def claim(self, trunk: nn.Module) -> bool:
        """Make the store valid for ``trunk``: keep the entries when they were computed by the
        same weights (returns True), else empty it."""
        digest = trunk_digest(trunk)
        if digest == self.digest:
            return True
        self.digest, self.entries, self.bytes = digest, {}, 0
        return False


class TrunkFeatureCache:
    """Callable used in place of a frozen trunk's ``forward``: ``images (B, 3, H, W)`` -> features.

    ``max_bytes``: stop adding entries once the stored features take this much memory (the
    entries already there keep being used). Features computed under autocast and without it are
    kept apart, so a result always has the dtype the trunk itself would return."""

    def __init__(self, trunk: nn.Module, max_bytes: int, memory: FeatureStore | None = None) -> None:
        self.trunk = trunk
        self.trunk_forward = type(trunk).forward.__get__(trunk)
        self.max_bytes = int(max_bytes)
        self.memory = memory if memory is not None else FeatureStore()
        self.reused: bool | None = None  # known at the first call, when the trunk's weights are final
        self.hits = self.misses = 0

    @property
    def store(self) -> dict[tuple, torch.Tensor]:
        return self.memory.entries

    @property
    def bytes(self) -> int:
        return self.memory.bytes

    @staticmethod
    def key(image: torch.Tensor) -> tuple:
        """The pixels' 64-bit hash with the shape and dtype (two of 10^5 distinct images collide
        with a chance of about 10^-9)."""
        return (tuple(image.shape), image.dtype, hash(image.detach().cpu().contiguous().numpy().tobytes()))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.trunk.training or any(p.requires_grad for p in self.trunk.parameters()):
            raise RuntimeError("the image feature cache needs a frozen trunk (freeze_resnet: true)")
        if self.reused is None:
            self.reused = self.memory.claim(self.trunk)
        mode = _autocast_mode(images.device.type)
        keys = [(mode, *self.key(img)) for img in images]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if len(missing) == len(keys):
            return self._compute(images, keys)
        fresh = dict(zip(missing, self._compute(images[missing], [keys[i] for i in missing]))) if missing else {}
        return _stack([fresh[i] if i in fresh else self.store[k] for i, k in enumerate(keys)])

    def _compute(self, images: torch.Tensor, keys: list[tuple]) -> torch.Tensor:
        """The trunk's features of ``images``, kept under ``keys`` while the memory bound allows.
        Each image runs through the trunk alone: convolution kernels pick their algorithm by batch
        size, so features computed in batches of different makeup differ in their last bits, and
        a run resumed in a fresh process (which computes them again, in other batches) would
        drift from the run it continues. One image at a time gives every image the same bits
        whenever and wherever it is computed."""
        with torch.no_grad():
            feats = torch.cat([self.trunk_forward(images[i:i + 1]) for i in range(images.size(0))])
        for k, feat in zip(keys, feats):
            size = feat.numel() * feat.element_size()
            if k not in self.store and self.bytes + size <= self.max_bytes:
                self.store[k] = feat.clone()
                self.memory.bytes += size
        return feats

    def __deepcopy__(self, memo: dict):
        """A copy of the model (the EMA model) gets the trunk's plain forward, not a second cache."""
        trunk = memo.get(id(self.trunk), self.trunk)
        return type(trunk).forward.__get__(trunk)


def _stack(features: list[torch.Tensor]) -> torch.Tensor:
    """The features as one batch in the memory layout the trunk itself returns (its convolutions
    give channels-last tensors): the layers after it multiply in that layout, and a batch laid
    out otherwise would give gradients that differ in their last bits from those of the same
    features fresh from the trunk (a resumed run would drift from the run it continues)."""
    out = torch.stack(features)
    first = features[0]
    if first.dim() == 3 and first.size(0) > 1 and first.stride(0) == 1:  # channels last
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _autocast_mode(kind: str) -> tuple:
    """(device type, autocast dtype or False) for the current context (torch < 2.4 has only the
    per-device functions)."""
    if hasattr(torch, "get_autocast_dtype"):
        return kind, torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind)
    if kind == "cpu":
        return kind, torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype()
    return kind, torch.is_autocast_enabled() and torch.get_autocast_gpu_dtype()


def attach_feature_cache(model: nn.Module, max_mb: float, memory: FeatureStore | None = None) -> TrunkFeatureCache:
    """Route ``model.encoder.embed_images`` (the frozen trunk) through a new cache of at most
    ``max_mb`` MiB, keeping its features in ``memory`` (reused from an earlier run when that run's
    trunk had the same weights). Only the instance's ``forward`` changes: parameters, buffers and
    state-dict keys stay the same, so checkpoints are unaffected. :func:`detach_feature_cache`
    undoes it."""
    trunk = model.encoder.embed_images
    cache = TrunkFeatureCache(trunk, int(max_mb * 2**20), memory)
    trunk.forward = cache
    return cache


def detach_feature_cache(model: nn.Module) -> None:
    trunk = model.encoder.embed_images
    if isinstance(trunk.__dict__.get("forward"), TrunkFeatureCache):
        del trunk.forward
