"""Keep decoded training images in memory, so each image file is read and decoded once per run.

A small model on a CPU spends as long preparing a batch as computing it: on the project's own
recipe (32 scenes of 128x128 per batch, 2 cores) opening and decoding the PNG files was about a
third of the data time, and every scene is read again by each task of a mixture and in every
epoch. ``image_cache_mb: N`` in a recipe keeps up to N MiB of decoded RGB pixels
(``width * height * 3`` bytes per image) and hands out a fresh copy on each read; the
transforms after decoding (resize, normalisation, random augmentation) run as before, so the
samples are exactly those of an uncached run.

The key is the file's absolute path with its size and modification time (``st_mtime_ns``): a
file rewritten during the run is decoded again. Only image files are cached; base64 images inside
TSV rows are decoded each time (their rows differ anyway). The cache lives in the process that
builds the samples: with ``num_workers: 0`` that is the training process and it lasts the whole
run (and the stages of a recipe share it); a data-loader worker keeps its own copy only until
the end of its epoch.

Why not a library: ``functools.lru_cache`` bounds entries, not bytes, and cannot tell that a file
changed; what is needed is a dict with a byte budget.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image


class DecodedImages:
    """Decoded RGB images of files, up to ``max_mb`` MiB (0 = keep nothing). Once full, further
    images are decoded on every read (nothing is evicted: the epochs read every image again, so
    which ones are kept does not matter)."""

    def __init__(self, max_mb: float = 0.0) -> None:
        self.store: dict[tuple, tuple[tuple[int, int], bytes]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.max_bytes = 0
        self.resize(max_mb)

    def resize(self, max_mb: float) -> None:
        """A new byte budget (a stage of a recipe may set its own); what is kept stays."""
        if max_mb < 0:
            raise ValueError(f"image cache size must be >= 0 MiB, got {max_mb}")
        self.max_bytes = int(max_mb * 2**20)

    def __getstate__(self) -> dict:  # a data-loader worker starts with an empty copy
        return {**self.__dict__, "store": {}, "bytes": 0}

    @staticmethod
    def key(path: Path) -> tuple:
        """(absolute path, size, modification time): one ``stat`` per read, no path resolution."""
        st = os.stat(path)
        return (os.path.abspath(path), st.st_size, st.st_mtime_ns)

    def load(self, path: Path, decode) -> Image.Image:
        """The RGB image of ``path``: a copy of the kept pixels, or ``decode(path)`` (which must
        return an RGB image and raise on bad files) kept while the budget allows."""
        try:
            key = self.key(path)
        except OSError:
            return decode(path)  # missing or unreadable: ``decode`` names the problem
        kept = self.store.get(key)
        if kept is not None:
            self.hits += 1
            size, data = kept
            return Image.frombytes("RGB", size, data)
        self.misses += 1
        img = decode(path)
        size = img.size[0] * img.size[1] * 3
        if img.mode == "RGB" and self.bytes + size <= self.max_bytes:
            self.store[key] = (img.size, img.tobytes())
            self.bytes += size
        return img

    def summary(self) -> str:
        return (f"image cache: {self.hits:,} hits, {self.misses:,} misses, {len(self.store):,} images in "
                f"{self.bytes / 2**20:.0f} MiB")
