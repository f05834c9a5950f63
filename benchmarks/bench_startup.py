"""Start-up: ``ofa caption IMG`` of one image with the project's own small model, from a fresh
process, against a fresh process that only imports torch (the floor no command can go below),
both measured alternately in this run (median of ``--rounds``).

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    from openofa.mini.scenes import make_scene

    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "scene.png"
        make_scene(0, (256, 256)).image.save(img)
        caption = [sys.executable, "-m", "openofa.cli", "caption", str(img), "--no-progress"]
        floor = [sys.executable, "-c", "import torch"]
        _seconds(caption)  # warm the file cache
        times: dict[str, list[float]] = {"ofa caption (one image)": [], "python -c 'import torch'": []}
        for _ in range(args.rounds):
            times["ofa caption (one image)"].append(_seconds(caption))
            times["python -c 'import torch'"].append(_seconds(floor))
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"{name:28s} {t:6.2f} s (median of {args.rounds})")
    base = med["python -c 'import torch'"]
    print(f"caption over import torch: {med['ofa caption (one image)'] / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
