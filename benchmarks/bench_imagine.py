"""Text-to-image speed: seconds per image for 16 samples of a 32x32 code grid (256 px), with the
KV cache, for our tiny and base configurations, against the original's decoding cost in the same
run, plus VQGAN decoding and CLIP reranking. Random weights (timing does not depend on them).

What is timed:

* **ours**: ``SequenceGenerator`` with the imagine task's settings (16 samples from one encoder
  pass and one cache, 1024 codes + eos, top-k 256): the grid's image positions projected once
  per cache, each step's query row alone, only the code range's logits computed.
* **original (projected)**: the original's ``SequenceGenerator`` + ``unify_transformer`` do the
  same layer work per step, and in addition, at every step and for every row, recompute the
  absolute position biases of *all* positions so far (text and image, self and cross: four
  ``(N, H, t+1, t+1 or S)`` products after projecting ``(N, t+1, C)`` position embeddings) and,
  in each layer, gather the ``(t+1) x (t+1)`` image relative bias, add it to a copy of the full
  ``(N, H, t+1, t+1)`` absolute bias, and only then keep the last row; and they
  project onto and normalise over the whole 59,457-token vocabulary. Running the original
  needs fairseq, which does not install beside this torch; so this script re-enacts exactly that
  extra work with the same modules and shapes at sample steps t, integrates it over the 1025
  steps (trapezoid rule) and adds it to our measured total. The original's own fairseq
  attention (concatenating the cached keys at each step) is not counted: the projection is a
  lower bound of the original's time.
* **VQGAN**: decoding one 32x32 grid to 256x256 pixels (the original's architecture).
* **rerank**: CLIP ViT-B/16 on 16 images and one caption.

    python benchmarks/bench_imagine.py                 # tiny and base
    python benchmarks/bench_imagine.py --sizes tiny --samples 16 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch


def original_extra_step(model, n_rows: int, t: int, enc_pos: torch.Tensor) -> None:
    """The work the original does at step t beyond ours (see the module doc), with our modules."""
    d = model.decoder
    cfg = model.config
    pos = torch.arange(t + 1)
    h = d.num_heads

    def heads(x):
        return x.view(x.shape[0], x.shape[1], h, -1).transpose(1, 2)

    text = d.embed_positions.weight[pos.clamp(max=d.embed_positions.weight.shape[0] - 1)].expand(n_rows, -1, -1)
    image = d.embed_image_positions.weight[d._code_ids(pos)].expand(n_rows, -1, -1)
    full = None
    for emb, ln in ((text, d.pos_ln), (image, d.image_pos_ln)):
        p = ln(emb)
        q = heads(d.self_pos_q_linear(p)) * d.pos_scaling
        k = heads(d.self_pos_k_linear(p))
        full = q @ k.transpose(2, 3)  # (N, H, t+1, t+1); the image one replaces the text one
        cq = heads(d.cross_pos_q_linear(p)) * d.pos_scaling
        (cq @ enc_pos.expand(n_rows, -1, -1, -1).transpose(2, 3))[:, :, -1:]
    ids = d._code_ids(pos)
    from openofa.model.positions import image_rel_bucket_of_ids

    for table in d.image_rel_pos_table_list:  # per layer: clone the full bias, add the relative one, keep a row
        bucket = image_rel_bucket_of_ids(ids, ids, cfg.image_bucket_size)
        bias = full.clone()
        bias += table.weight[bucket].permute(2, 0, 1).unsqueeze(0)
        bias[:, :, -1:]


def full_vocab_extra(model, n_rows: int) -> None:
    """The original's output projection onto the whole vocabulary and its log-softmax (ours
    computes the code range only)."""
    feats = torch.randn(n_rows, model.config.decoder_embed_dim)
    torch.log_softmax(model.decoder.output_projection(feats), dim=-1)


def restricted_projection(model, n_rows: int, ids: torch.Tensor) -> None:
    feats = torch.randn(n_rows, model.config.decoder_embed_dim)
    torch.log_softmax(model.decoder.output_logits(feats, ids), dim=-1)


def timed(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1024, help="codes per image (1024 = 32x32, 256 px)")
    ap.add_argument("--skip-rerank", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from openofa.config import get_config
    from openofa.generation import GenerationConfig, SequenceGenerator
    from openofa.model import build_model
    from openofa.tasks.imagine import source
    from openofa.text.tokenizer import OFATokenizer

    tok = OFATokenizer.for_config(get_config("tiny"))
    src = torch.tensor([source(tok, "a red bus on a street")])
    n = args.samples
    grid = int(round(args.steps ** 0.5))
    print(f"threads {args.threads}, {n} samples, {grid}x{grid} codes ({grid * 8} px)")
    rows = []
    for size in args.sizes:
        torch.manual_seed(0)
        cfg = get_config(size, code_image_size=grid * 8, disable_entangle=True)
        model = build_model(cfg).eval()
        model.prepack()
        steps = grid * grid
        settings = dict(beam_size=n, nbest=n, sampling=True, sampling_topk=256, temperature=1.0, min_len=steps,
                        max_len_a=0, max_len_b=steps, max_len=steps, gen_code=True, seed=0,
                        constraint_range=(cfg.code_0, cfg.code_0 + cfg.code_dict_size))
        gen = SequenceGenerator(GenerationConfig(**settings))
        with torch.inference_mode():
            t0 = time.perf_counter()
            hyps = gen.generate(model, src)[0]
            ours = time.perf_counter() - t0
            assert len(hyps) == n and all(len(h.tokens) == steps + 1 for h in hyps)
            enc = model.encode(src)
            enc_pos = model.decoder.cross_pos_keys(enc)
            ids = torch.cat([torch.arange(4), torch.arange(cfg.code_0, cfg.code_0 + cfg.code_dict_size)])
            vocab_extra = max(0.0, timed(lambda: full_vocab_extra(model, n)) - timed(lambda: restricted_projection(model, n, ids)))
            points = sorted({0, steps // 8, steps // 4, steps // 2, 3 * steps // 4, steps})
            extra = {t: timed(lambda t=t: original_extra_step(model, n, t, enc_pos), repeat=2) for t in points}
        bias_total = sum((points[i + 1] - points[i]) * (extra[points[i]] + extra[points[i + 1]]) / 2
                         for i in range(len(points) - 1)) + extra[points[0]]
        original = ours + bias_total + (steps + 1) * vocab_extra
        rows.append((size, ours, original, bias_total, vocab_extra * (steps + 1)))
        print(f"{size}: ours {ours:.1f} s ({ours / n:.2f} s/image); original projected {original:.1f} s "
              f"({original / n:.2f} s/image: + position biases {bias_total:.1f} s, + full vocabulary "
              f"{vocab_extra * (steps + 1):.1f} s); speed-up {original / ours:.1f}x", flush=True)
        print("   original's extra per step at t = " + ", ".join(f"{t}: {1000 * extra[t]:.1f} ms" for t in points))
        del model

    from openofa import vqgan

    vq = vqgan.GumbelVQ().eval()
    codes = torch.randint(0, 8192, (1, grid, grid))
    with torch.inference_mode():
        dec = timed(lambda: vq.decode(codes), repeat=1)
    print(f"VQGAN decode: {dec:.2f} s per image ({grid * 8} px), the same network as the original's")
    if not args.skip_rerank:
        from openofa import clip

        model = clip.CLIP().eval()
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.02)
        images = vqgan.to_pil(torch.rand(n, 3, grid * 8, grid * 8) * 2 - 1)
        with torch.inference_mode():
            rr = timed(lambda: clip.scores(model, images, "a red bus on a street"), repeat=1)
        print(f"CLIP rerank of {n} images: {rr:.2f} s ({rr / n:.3f} s/image)")
    print("\nsize | ours s/image (codes) | original s/image (projected) | speed-up")
    for size, ours, original, _, _ in rows:
        print(f"{size} | {ours / n:.2f} | {original / n:.2f} | {original / ours:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
