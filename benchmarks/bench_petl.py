"""Parameter-efficient tuning: peak training memory, trainable parameters and speed per method,
through the real Trainer on synthetic batches (the same updates as ``bench_train.py``).

Rows: full finetuning (the baseline), LoRA, prefix tuning, adapters and BitFit, each in a fresh
process so the peak memory is that row's alone (CPU: the process's peak RSS; CUDA: the peak of
allocated GPU memory). "vs full" divides the row's peak by full finetuning's, measured in the same
run. The methods' settings are those of the RefCOCO recipes (recipes/refcoco_*_large.yaml).

    python benchmarks/bench_petl.py                        # base, batch 8 (the documented table)
    python benchmarks/bench_petl.py --size tiny --steps 2  # quick look
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time

METHODS = {
    "full": None,
    "lora": {"method": "lora", "r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj",
                                                                         "fc1", "fc2"]},
    "prefix": {"method": "prefix", "length": 100},
    "adapter": {"method": "adapter", "dim": 100},
    "bitfit": {"method": "bitfit"},
}


def _row(name: str, args: argparse.Namespace, out) -> None:
    import torch

    from openofa.config import get_config
    from openofa.model import build_model
    from openofa.petl import apply
    from openofa.train.recipe import TrainConfig
    from openofa.train.synthetic import SyntheticDataset
    from openofa.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(get_config(args.size))
    total = sum(p.numel() for p in model.parameters())
    spec = METHODS[name]
    if spec is not None:
        apply(model, spec)
    n = args.batch * (args.warmup + args.steps)
    data = SyntheticDataset(n, src_len=args.src_len, tgt_len=args.tgt_len, image_size=args.image_size,
                            vocab_size=model.config.vocab_size, vary_length=False)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(task="synthetic", model=args.size, batch_size=args.batch, update_freq=1,
                          max_update=args.warmup + args.steps, lr=1e-5, warmup_updates=1, device=args.device,
                          run_dir=tmp, validate_every_epochs=0, save_every_epochs=0, log_every=10 ** 9,
                          progress=False, tensorboard=False, petl=spec).validate("bench")
        trainer = Trainer(cfg, model, data, hooks=[lambda tr: times.append(time.perf_counter())])
        trainable = sum(p.numel() for p in trainer.params)
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        start = time.perf_counter()
        trainer._train_epoch()  # the updates only: no validation, checkpoint or export
        times.insert(0, start)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
            peak = torch.cuda.max_memory_allocated(trainer.device) / 2 ** 30
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
        timed = times[args.warmup:]
        secs = (timed[-1] - timed[0]) / max(len(timed) - 1, 1)
        out.put({"method": name, "trainable": trainable, "total": total, "peak_gb": peak,
                 "sec_per_update": secs, "device": str(trainer.device)})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="base")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=384)
    p.add_argument("--src-len", type=int, default=20)
    p.add_argument("--tgt-len", type=int, default=20)
    p.add_argument("--warmup", type=int, default=1, help="updates not timed")
    p.add_argument("--steps", type=int, default=2, help="timed updates")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2")
    names = args.methods.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        p.error(f"unknown method {unknown[0]}; known: {', '.join(METHODS)}")
    if "full" in names:  # the baseline first
        names = ["full"] + [n for n in names if n != "full"]

    rows = []
    ctx = mp.get_context("spawn")
    for name in names:
        q = ctx.Queue()
        proc = ctx.Process(target=_row, args=(name, args, q))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"{name}: failed (exit {proc.exitcode})", file=sys.stderr)
            continue
        rows.append(q.get())
        print(f"  {name}: peak {rows[-1]['peak_gb']:.2f} GiB, {rows[-1]['sec_per_update']:.2f} s/update",
              file=sys.stderr)
    if not rows:
        return 1
    full = next((r for r in rows if r["method"] == "full"), None)
    print(f"\n{args.size}, training batch {args.batch}, {args.image_size}x{args.image_size}, src {args.src_len} / "
          f"tgt {args.tgt_len} tokens, {rows[0]['device']}, {args.steps} timed updates after {args.warmup}")
    print("| method | trainable parameters | share | peak memory (GiB) | vs full | s/update | speed vs full |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mem = f"{r['peak_gb'] / full['peak_gb']:.2f}" if full else "-"
        speed = f"{full['sec_per_update'] / r['sec_per_update']:.2f}x" if full else "-"
        print(f"| {r['method']} | {r['trainable']:,} | {100 * r['trainable'] / r['total']:.2f}% | "
              f"{r['peak_gb']:.2f} | {mem} | {r['sec_per_update']:.2f} | {speed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
