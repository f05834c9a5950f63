"""MuE early exit on the project's own small model: speed and quality per threshold.

For each threshold (``off`` runs every layer) it evaluates the bundled model on the 60 held-out
scenes (``openofa.mini.scenes.write_dataset(n=60, seed=0)``, the scenes of tests/test_own_model.py)
for VQA, grounding and captioning, and prints the metric, the seconds per batch (the whole
``evaluate`` call, image loading included, divided by its batches) and the mean number of encoder
and decoder layers run (per encoder call, per decoding step). All settings run in the same process,
interleaved over ``--rounds`` rounds (the best round is kept), so a shared machine's drift hits
them alike.

    python benchmarks/bench_early_exit.py                       # thresholds off,0.99,0.95,0.9,0.85,0.8,0.7
    python benchmarks/bench_early_exit.py --thresholds off,0.9 --rounds 3
    python benchmarks/bench_early_exit.py --thresholds off,none:0.8   # decoder only (ENC:DEC)
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

TASKS = {"vqa": ("vqa", "VQA accuracy"), "ground": ("ground", "Acc@0.5"), "caption": ("caption", "CIDEr-D")}


def _setting(text: str):
    if text == "off":
        return None
    if ":" in text:
        enc, dec = text.split(":")
        return (None if enc == "none" else float(enc), None if dec == "none" else float(dec))
    return float(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--thresholds", default="off,0.99,0.95,0.9,0.85,0.8,0.7")
    p.add_argument("--tasks", default="vqa,ground,caption")
    p.add_argument("--n", type=int, default=60, help="held-out scenes")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import openofa
    from openofa.evaluate import evaluate
    from openofa.mini.scenes import write_dataset
    from openofa.model.early_exit import set_early_exit

    settings = [t.strip() for t in args.thresholds.split(",")]
    tasks = [t.strip() for t in args.tasks.split(",")]
    ofa = openofa.load()
    model = ofa.model
    print(f"model: {ofa.describe()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.n} scenes, {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        files = write_dataset(tmp, n=args.n, seed=0)
        evaluate(ofa, "caption", files["caption"], progress=False, batch_size=args.batch_size, limit=8)  # warm-up
        rows = {t: sum(1 for line in open(files[TASKS[t][0]]) if line.strip()) for t in tasks}
        best: dict = {}
        quality: dict = {}
        layers: dict = {}
        for _ in range(args.rounds):
            for task in tasks:
                file_key, metric = TASKS[task]
                for s in settings:
                    enc_rule, dec_rule = set_early_exit(model, _setting(s))
                    t0 = time.perf_counter()
                    m = evaluate(ofa, task, files[file_key], progress=False, batch_size=args.batch_size)
                    dt = (time.perf_counter() - t0) / math.ceil(rows[task] / args.batch_size)
                    best[task, s] = min(dt, best.get((task, s), float("inf")))
                    quality[task, s] = m[metric]
                    layers[task, s] = (enc_rule.mean_layers if enc_rule else len(model.encoder.layers),
                                       dec_rule.mean_layers if dec_rule else len(model.decoder.layers))
        set_early_exit(model, None)
    print("rows: " + ", ".join(f"{t} {rows[t]}" for t in tasks))
    print()
    print(f"{'task':8} {'threshold':>10} {'metric':>13} {'value':>8} {'s/batch':>8} {'vs off':>7} "
          f"{'enc layers':>10} {'dec layers':>10}")
    for task in tasks:
        _, metric = TASKS[task]
        off = best.get((task, "off"))
        for s in settings:
            ratio = f"{off / best[task, s]:.2f}x" if off else "-"
            enc_l, dec_l = layers[task, s]
            print(f"{task:8} {s:>10} {metric:>13} {quality[task, s]:8.4f} {best[task, s]:8.3f} {ratio:>7} "
                  f"{enc_l:10.2f} {dec_l:10.2f}")


if __name__ == "__main__":
    main()
