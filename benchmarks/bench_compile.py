"""``torch.compile`` on the decoder's incremental step (CPU): caption generation on the bundled
model and on the ``tiny`` size (random weights, the same shapes as the released file), eager
against each decoder layer compiled (inductor, dynamic shapes: the cache grows every step).

Prints the seconds per batch of beam-5 caption generation (16 tokens) for each, best of
``--repeat`` after warm-up, and the compile time paid by the first batch.

    python benchmarks/bench_compile.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch


def _time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sizes", default="own,tiny")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import openofa
    from openofa.config import get_config
    from openofa.generation.generator import GenerationConfig, SequenceGenerator
    from openofa.model import build_model

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, beam 5")
    gen = SequenceGenerator(GenerationConfig(beam_size=5, max_len_a=0, max_len_b=16, min_len=16))
    for size in args.sizes.split(","):
        if size == "own":
            model = openofa.load().model
        else:
            model = build_model(get_config(size)).eval()
            model.fold_batchnorm()
            model.prepack()
        cfg = model.config
        img = 256 if size == "own" else 384
        torch.manual_seed(0)
        src = torch.randint(4, min(cfg.vocab_size, 1000), (args.batch, 12))
        images = torch.randn(args.batch, 3, img, img)

        def run():
            with torch.inference_mode():
                return gen.generate(model, src, None, images)

        run()
        eager = _time(run, args.repeat)
        ref = run()
        layers = model.decoder.layers
        originals = [layer.forward for layer in layers]
        for layer in layers:
            layer.forward = torch.compile(layer.forward, dynamic=True)
        t0 = time.perf_counter()
        out = run()
        first = time.perf_counter() - t0
        compiled = _time(run, args.repeat)
        same = all(torch.equal(a[0].tokens, b[0].tokens) for a, b in zip(ref, out))
        for layer, f in zip(layers, originals):
            layer.forward = f
        print(f"{size:5} eager {eager:.3f} s/batch, compiled layers {compiled:.3f} s/batch "
              f"({eager / compiled:.2f}x), first compiled batch {first:.1f} s, same tokens: {same}")


if __name__ == "__main__":
    main()
