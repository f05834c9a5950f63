"""Reduced precision judged by quality: speed against float32 in the same run, and quality
against float32 on the bundled model's held-out sets and on the golden fixtures.

Modes: ``fp32``; ``bf16`` (image trunk and encoder in bf16, decoder float32; only where
``openofa.precision.cpu_bf16_speedup`` says this CPU computes bf16 faster, else reported as
skipped with the probe's figure); ``bf16-all`` (the decoder in bf16 too, same condition);
``int8`` (the image trunk in static int8, the rest float32: what ``dtype="int8"`` loads,
calibrated on its default synthetic pictures); ``int8-bf16`` (the int8 trunk, the encoder in bf16, the
decoder float32: ``dtype="int8-bf16"``); ``int8-bf16-all`` (the decoder in bf16 too); ``int8-linears`` (the decoder's linear layers in dynamic int8, the rest float32) and
``int8-linears-all`` (the encoder's linear layers too): the dynamic int8 of linear layers, to show
what it pays.

Speed: caption generation, beam 5, at most 16 tokens, no-repeat trigram, batch 1 and 8, on the
bundled model (256x256 images) and on the tiny recipe model (384x384); the modes run round-robin
in one process, ``--rounds`` times, best time kept, so a shared machine's drift hits all alike.
Quality: VQA accuracy, Acc@0.5 and CIDEr-D on ``openofa.mini.scenes.write_dataset(n=60, seed=0)``
(deltas in points against float32; the int8 trunk calibrated on 16 scenes of other seeds, as a
user calibrates on their own images, or with ``--default-calibration`` on the default synthetic
pictures), and on the golden generation cases (tiny recipe model) the
best hypotheses that differ from float32's with float32's score gap between the two
(``openofa.model.int8.tie_margin``; length-normalised log-probability).

    python benchmarks/bench_precision.py                  # everything (~10 minutes on 2 cores)
    python benchmarks/bench_precision.py --skip-quality --rounds 1   # speed only
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

MODES = ("fp32", "bf16", "bf16-all", "int8", "int8-bf16", "int8-bf16-all", "int8-linears", "int8-linears-all")


def apply_mode(model, mode: str, calibrate=None):
    """``model`` in ``mode``; ``calibrate(model)`` quantises the int8 modes' trunk (default: on
    random images, enough for timing)."""
    from openofa.model.int8 import quantize_model
    from openofa.model.int8_trunk import quantize_trunk

    if mode in ("bf16", "int8-bf16"):
        model.set_precision(torch.bfloat16, torch.float32)
    elif mode in ("bf16-all", "int8-bf16-all"):
        model.set_precision(torch.bfloat16, torch.bfloat16)
    elif mode == "int8-linears":
        quantize_model(model)
    elif mode == "int8-linears-all":
        quantize_model(model, encoder=True)
    if mode in ("int8", "int8-bf16", "int8-bf16-all"):
        if calibrate is None:
            quantize_trunk(model, [torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1])
        else:
            calibrate(model)
    model.prepack()
    return model


def recipe_tiny():
    from openofa.checkpoints import recipe_state_dict
    from openofa.config import get_config
    from openofa.model import OFAModel

    cfg = get_config("tiny")
    model = OFAModel(cfg)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in recipe_state_dict(cfg).items() if k in own})
    return model.eval().fold_batchnorm()


def calibration_batches(side: int, n: int = 16) -> list:
    """What ``OFA.quantize_trunk`` calibrates on by default, for a bare model: the synthetic
    pictures of ``openofa.vision.calibration``, normalised with mean and std 0.5 (the models here
    use that normalisation)."""
    import numpy as np

    from openofa.vision.calibration import calibration_images

    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in calibration_images(n, side)]))
    x = x.permute(0, 3, 1, 2) / 255.0
    return [(x[i:i + 8] - 0.5) / 0.5 for i in range(0, n, 8)]


def speed_models():
    """(name, model, tokenizer, image side) of the two models timed."""
    from openofa import OFA
    from openofa.text.tokenizer import OFATokenizer

    ofa = OFA.load(prepack=False)
    yield "bundled", ofa.model, ofa.tokenizer, 256
    yield "tiny", recipe_tiny(), OFATokenizer.from_language("en"), 384


def speed(modes, rounds: int, batches) -> list[dict]:
    from openofa.generation import GenerationConfig, SequenceGenerator
    from openofa.tasks.caption import PROMPT

    gen = SequenceGenerator(GenerationConfig(beam_size=5, max_len_a=0, max_len_b=16, min_len=1,
                                             no_repeat_ngram_size=3))
    rows = []
    for name, base, tok, side in speed_models():
        models = {m: apply_mode(copy.deepcopy(base), m) for m in modes}
        for batch in batches:
            src = torch.tensor([tok.encode(PROMPT, bos=True, eos=True)] * batch)
            images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
            masks = torch.ones(batch, dtype=torch.bool)
            best = {m: float("inf") for m in modes}
            tokens = {}
            with torch.inference_mode():
                for m in modes:  # warm-up
                    gen.generate(models[m], src, None, images, masks)
                for _ in range(rounds):
                    for m in modes:
                        t = time.perf_counter()
                        out = gen.generate(models[m], src, None, images, masks)
                        best[m] = min(best[m], time.perf_counter() - t)
                        tokens[m] = [h[0].tokens.tolist() for h in out]
            for m in modes:
                rows.append({"model": name, "batch": batch, "mode": m, "seconds": best[m],
                             "vs_fp32": best["fp32"] / best[m], "same_tokens": tokens[m] == tokens["fp32"]})
                print(f"{name:8} {batch:>5} {m:9} {best[m]:8.3f} s {best['fp32'] / best[m]:6.2f}x "
                      f"same tokens as fp32: {tokens[m] == tokens['fp32']}", flush=True)
    return rows


def held_out(modes, default_calibration: bool = False) -> list[dict]:
    from openofa import OFA
    from openofa.evaluate import evaluate
    from openofa.mini.scenes import make_scene, write_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_dataset(tmp, n=60, seed=0)
        scores = {}
        # the int8 trunk calibrated as a user would: on 16 images like the ones it will see (scenes of
        # other seeds than the held-out ones), or on the default synthetic pictures
        scenes = None if default_calibration else [make_scene(1_000_000 + i).image for i in range(16)]
        for m in modes:
            ofa = OFA.load(prepack=False)
            apply_mode(ofa.model, m, calibrate=lambda model: ofa.quantize_trunk(scenes))
            scores[m] = {}
            for task, metric in [("vqa", "VQA accuracy"), ("ground", "Acc@0.5"), ("caption", "CIDEr-D")]:
                scores[m][metric] = evaluate(ofa, task, files[task], progress=False)[metric]
            delta = {k: round(100 * (v - scores["fp32"][k]), 2) for k, v in scores[m].items()}
            rows.append({"mode": m, "scores": scores[m], "delta_points": delta})
            print(f"{m:9} " + "  ".join(f"{k} {100 * v:.2f} ({delta[k]:+.2f})" for k, v in scores[m].items()),
                  flush=True)
    return rows


def golden(modes) -> list[dict]:
    from openofa.model.int8_trunk import quantize_trunk

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support import GOLDEN_GENERATION_CASES, golden_decodes

    fp32 = recipe_tiny()
    rows = []
    for m in modes:
        if m == "fp32":
            continue
        model = apply_mode(copy.deepcopy(fp32), m,
                           calibrate=lambda model: quantize_trunk(model, calibration_batches(384)))
        for name in GOLDEN_GENERATION_CASES:
            trie, want, got, gap = golden_decodes(fp32, model, name)
            for i, (w, g) in enumerate(zip(want, got)):
                a, b = w[0].tokens.tolist(), g[0].tokens.tolist()
                margin = gap(i, a, b) if a != b and trie is None else None
                rows.append({"mode": m, "case": name, "row": i, "same": a == b, "fp32_margin": margin})
                print(f"{m:9} {name:20} row {i}: " + ("same best hypothesis" if a == b else
                      f"differs; float32's score gap {margin if margin is None else round(margin, 4)}"),
                      flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--default-calibration", action="store_true",
                    help="held-out quality with the int8 trunk calibrated on its default synthetic pictures "
                         "instead of 16 scenes like the held-out ones")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from openofa.precision import AUTO_MIN_SPEEDUP, cpu_bf16_speedup

    torch.set_num_threads(args.threads)
    modes = ["fp32", *[m for m in args.modes if m != "fp32"]]
    probe = cpu_bf16_speedup()
    print(f"torch {torch.__version__}, {args.threads} threads; bf16 probe: {probe:.2f}x float32")
    for m in ("bf16", "bf16-all", "int8-bf16", "int8-bf16-all"):
        if m in modes and probe < AUTO_MIN_SPEEDUP:
            print(f"{m} skipped: this CPU's bf16 products are not faster (probe {probe:.2f}x < {AUTO_MIN_SPEEDUP}x)")
            modes.remove(m)
    result = {"torch": torch.__version__, "bf16_probe": probe, "modes": modes}
    if not args.skip_speed:
        print("\nspeed: caption, beam 5, 16 tokens")
        result["speed"] = speed(modes, args.rounds, args.batches)
    if not args.skip_quality:
        print("\nheld-out quality (bundled model, 60 scenes), points; in brackets against fp32")
        result["held_out"] = held_out(modes, args.default_calibration)
        print("\ngolden generation cases (tiny recipe model)")
        result["golden"] = golden(modes)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
