"""``torch.compile`` on the decoder's incremental step (CPU): caption generation on the bundled
model and on the ``tiny`` size (random weights, the same shapes as the released file), eager
against each decoder layer compiled (inductor, dynamic shapes: the cache grows every step).

Prints the seconds per batch of beam-5 caption generation (16 tokens) for each, best of
``--repeat`` alternating batches (median) after warm-up, and the compile time paid by the first batch.

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
    p.add_argument("--recompile-limit", type=int, default=None,
                   help="torch._dynamo's recompile limit (default 8: each layer and each new cache "
                        "shape recompiles, past the limit the layer runs eager)")
    args = p.parse_args(argv)
    if args.recompile_limit:
        torch._dynamo.config.recompile_limit = args.recompile_limit
        torch.fx.experimental._config.use_duck_shape = False
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

        ref = run()
        layers = model.decoder.layers
        eager_fns = [layer.forward for layer in layers]
        compiled_fns = [torch.compile(f, dynamic=True) for f in eager_fns]

        def use(fns):
            for layer, f in zip(layers, fns):
                layer.forward = f

        use(compiled_fns)
        t0 = time.perf_counter()
        out = run()
        first = time.perf_counter() - t0
        run()
        same = all(torch.equal(a[0].tokens, b[0].tokens) for a, b in zip(ref, out))
        # eager and compiled alternate, one batch each, so a shared machine's drift hits both
        times = {"eager": [], "compiled": []}
        for _ in range(args.repeat):
            for name, fns in (("eager", eager_fns), ("compiled", compiled_fns)):
                use(fns)
                times[name].append(_time(run, 1))
        use(eager_fns)
        eager, compiled = (sorted(times[k])[len(times[k]) // 2] for k in ("eager", "compiled"))
        print(f"{size:5} eager {eager:.3f} s/batch, compiled layers {compiled:.3f} s/batch (medians) "
              f"({eager / compiled:.2f}x), first compiled batch {first:.1f} s, same tokens: {same}")


if __name__ == "__main__":
    main()
