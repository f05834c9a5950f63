"""Input preparation: captions of many image files, their reading and resizing done by the
calling thread alone or by a thread pool (``OFA.prepare_workers``), with the project's own small
model so that preparation is a large share of the time.

Writes a 1920x1080 JPEG and a 640x480 PNG (random pixels) to a temporary folder, captions each
file 32 times in batches of 8, and prints seconds per run and the pool's speed-up over the
plain loop, both measured round-robin in this process (best of ``--rounds``).

    python benchmarks/bench_inputs.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from openofa.api import OFA

    ofa = OFA.load()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, (w, h) in {"jpeg 1920x1080": (1920, 1080), "png 640x480": (640, 480)}.items():
            path = os.path.join(tmp, "img." + name.split()[0])
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            files[name] = path
        pool = min(os.cpu_count() or 1, 8)
        print(f"torch {torch.__version__}, {args.threads} threads, pool of {pool}; "
              f"{args.images} captions per run, batch {args.batch_size}\n")
        print(f"{'input':16} {'plain s':>8} {'pool s':>8} {'pool speed-up':>13}")
        for name, path in files.items():
            inputs = [{"image": path}] * args.images
            best = {1: float("inf"), None: float("inf")}
            for _ in range(args.rounds):
                for workers in best:
                    ofa.prepare_workers = workers
                    ofa.run("caption", inputs[: args.batch_size], batch_size=args.batch_size)  # warm-up
                    t = time.perf_counter()
                    ofa.run("caption", inputs, batch_size=args.batch_size)
                    best[workers] = min(best[workers], time.perf_counter() - t)
            print(f"{name:16} {best[1]:8.3f} {best[None]:8.3f} {best[1] / best[None]:12.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
