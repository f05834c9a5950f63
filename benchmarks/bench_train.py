"""Training speed: samples per second and peak memory of full training updates (forward, label-
smoothed loss, backward, clipping, AdamW) through the real Trainer on synthetic batches.

One table: tiny/base x fp32/bf16 autocast (optionally with activation checkpointing), batch 8,
384x384 images, 20 source and 20 target tokens; each row runs in a fresh process, so the peak
memory is that row's (CPU: the process's peak RSS; CUDA: the peak of allocated GPU memory).
"ratio" is the speed relative to the same size in fp32.

    python benchmarks/bench_train.py                          # full table
    python benchmarks/bench_train.py --sizes tiny --steps 2   # quick look
    python benchmarks/bench_train.py --device cuda --checkpointing
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time


def _row(size: str, precision: str, checkpointing: bool, args: argparse.Namespace, out) -> None:
    import torch

    from openofa.config import get_config
    from openofa.model import build_model
    from openofa.train.recipe import TrainConfig
    from openofa.train.synthetic import SyntheticDataset
    from openofa.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(get_config(size))
    n = args.batch * (args.warmup + args.steps)
    data = SyntheticDataset(n, src_len=args.src_len, tgt_len=args.tgt_len, image_size=args.image_size,
                            vocab_size=model.config.vocab_size, vary_length=False)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(task="synthetic", model=size, batch_size=args.batch, update_freq=1,
                          max_update=args.warmup + args.steps, lr=1e-5, warmup_updates=1, precision=precision,
                          activation_checkpointing=checkpointing, device=args.device, run_dir=tmp,
                          validate_every_epochs=0, save_every_epochs=0, log_every=10 ** 9, progress=False,
                          tensorboard=False).validate("bench")
        trainer = Trainer(cfg, model, data, hooks=[lambda tr: times.append(time.perf_counter())])
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
        out.put({"size": size, "precision": precision, "checkpointing": checkpointing,
                 "sps": args.batch / secs, "sec_per_update": secs, "peak_gb": peak,
                 "device": str(trainer.device)})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,base")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--checkpointing", action="store_true", help="add rows with activation checkpointing")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=384)
    p.add_argument("--src-len", type=int, default=20)
    p.add_argument("--tgt-len", type=int, default=20)
    p.add_argument("--warmup", type=int, default=1, help="updates not timed")
    p.add_argument("--steps", type=int, default=3, help="timed updates")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2")

    rows = []
    ctx = mp.get_context("spawn")
    for size in args.sizes.split(","):
        for ckpt in ([False, True] if args.checkpointing else [False]):
            for precision in args.precisions.split(","):
                q = ctx.Queue()
                proc = ctx.Process(target=_row, args=(size, precision, ckpt, args, q))
                proc.start()
                proc.join()
                if proc.exitcode != 0:
                    print(f"{size} {precision}: failed (exit {proc.exitcode})", file=sys.stderr)
                    continue
                rows.append(q.get())
                print(f"  {rows[-1]['size']} {precision}{' ckpt' if ckpt else ''}: "
                      f"{rows[-1]['sps']:.2f} samples/s", file=sys.stderr)
    if not rows:
        return 1
    base = {(r["size"], r["checkpointing"]): r["sps"] for r in rows if r["precision"] == "fp32"}
    print(f"\ntraining, batch {args.batch}, {args.image_size}x{args.image_size}, src {args.src_len} / tgt "
          f"{args.tgt_len} tokens, {rows[0]['device']}, {args.steps} timed updates after {args.warmup}")
    print("| size | precision | act. ckpt | samples/s | s/update | peak memory (GiB) | vs fp32 |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        ref = base.get((r["size"], r["checkpointing"]))
        ratio = f"{r['sps'] / ref:.2f}x" if ref else "-"
        print(f"| {r['size']} | {r['precision']} | {'yes' if r['checkpointing'] else 'no'} | {r['sps']:.2f} | "
              f"{r['sec_per_update']:.2f} | {r['peak_gb']:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
