"""Caption generation through onnxruntime against PyTorch, in one process.

Each model is exported with ``openofa.export.export_onnx`` to a temporary folder; both backends
then run the same generator (beam 5, exactly 16 tokens: eos is held back until the last step, so
both do the same work whatever the weights say) on the same batches of random images, with the same
thread count, taking turns. Prints seconds per batch (median of ``--repeat`` after one warm-up), the ratio
PyTorch / onnxruntime (above 1: onnxruntime is faster) and whether the tokens are the same.

Models: ``mini`` is the bundled small model (128 px), ``tiny`` the tiny size with the recipe
weights (384 px), run as ``openofa.load`` prepares a model (BatchNorms folded, decoder weights
pre-packed for oneDNN).

    python benchmarks/bench_onnx.py                        # mini and tiny, batch 1 and 8
    python benchmarks/bench_onnx.py --models mini --repeat 1   # quick look
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def _model(name: str):
    """(OFAModel as openofa.load prepares it, image side)."""
    if name == "mini":
        import openofa

        return openofa.load().model, 128
    from openofa.checkpoints import recipe_state_dict
    from openofa.config import get_config
    from openofa.model import build_model

    cfg = get_config(name)
    model = build_model(cfg)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in recipe_state_dict(cfg).items() if k in own})
    model = model.eval().fold_batchnorm()
    model.prepack()
    return model, 384


def _seconds(fns, repeat: int) -> tuple[list[float], list[object]]:
    """Median seconds of each function and its last output; the functions take turns (one warm-up
    round, then ``repeat`` rounds) so that a shared machine's drift hits both alike."""
    outs = [fn() for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times], outs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mini,tiny")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from openofa.export import export_onnx
    from openofa.export.onnx_runtime import OnnxModel
    from openofa.generation import GenerationConfig, SequenceGenerator

    gen = SequenceGenerator(GenerationConfig(beam_size=5, max_len_b=16, min_len=16, no_repeat_ngram_size=3))
    print(f"threads {args.threads}, torch {torch.__version__}, beam 5, 16 tokens, median of {args.repeat}")
    print(f"{'model':6} {'batch':>5} {'pytorch s':>10} {'onnxruntime s':>14} {'pytorch/ort':>12} {'same tokens':>12}")
    for name in args.models.split(","):
        model, side = _model(name)
        with tempfile.TemporaryDirectory() as folder:
            export_onnx(model, folder, image_size=side)
            runtime = OnnxModel(folder, threads=args.threads)
            cfg = model.config
            for batch in [int(b) for b in args.batches.split(",")]:
                g = torch.Generator().manual_seed(batch)
                images = torch.randn(batch, 3, side, side, generator=g)
                src = torch.randint(4, 100, (batch, 8), generator=g)
                src[:, 0], src[:, -1] = cfg.bos, cfg.eos
                (t_pt, t_ort), (want, got) = _seconds([lambda: gen.generate(model, src, None, images),
                                                       lambda: gen.generate(runtime, src, None, images)],
                                                      args.repeat)
                same = all(a[0].tokens.tolist() == b[0].tokens.tolist() for a, b in zip(want, got))
                print(f"{name:6} {batch:5d} {t_pt:10.3f} {t_ort:14.3f} {t_pt / t_ort:12.2f} {str(same):>12}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
