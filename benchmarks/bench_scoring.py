"""Candidate scoring (VQA all-candidate mode): one image, a question as decoder prompt, N answers
of 1-3 words scored under the answer trie, recipe weights, 2 threads.

Compares, in this process, the plain path (every candidate row decodes its own copy of the
encoder output and is projected onto the whole vocabulary at every position, as a model with
only ``decode`` gets) with the grouped path ``score_candidates`` takes for our model (the prompt
decoded once and its cache copied to every candidate, the input's keys and values shared by its
candidates, only scored positions projected, onto the trie's tokens only). Prints seconds, the
speed-up and the largest score difference.

    python benchmarks/bench_scoring.py
    python benchmarks/bench_scoring.py --sizes tiny --answers 1000
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch


class PlainDecode:
    """The model through the minimal scoring interface (encode, decode, config)."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def encode(self, *a, **k):
        return self.model.encode(*a, **k)

    def decode(self, prev, enc):
        return self.model.decode(prev, enc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    ap.add_argument("--answers", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from openofa.checkpoints import recipe_state_dict
    from openofa.config import get_config
    from openofa.generation import Trie, score_candidates
    from openofa.model import model_from_state_dict
    from openofa.text.tokenizer import OFATokenizer

    tok = OFATokenizer.from_language("en")
    words = ("red blue dog cat two three yes no table man woman car tree white black green frisbee pizza "
             "tennis baseball kitchen street water snow horse").split()
    rng = random.Random(0)
    answers = sorted({" ".join(rng.sample(words, rng.randint(1, 3))) for _ in range(args.answers * 4)})
    answers = answers[: args.answers]
    cands = [tok.encode(" " + a) for a in answers]
    trie = Trie.from_answers(cands, bos=tok.bos, eos=tok.eos)
    src = torch.tensor([tok.encode(" what is in the image?", bos=True, eos=True)])
    prompt = [tok.encode(" what is in the image?")]
    image = torch.rand(1, 3, 384, 384, generator=torch.Generator().manual_seed(0)) * 2 - 1
    print(f"torch {torch.__version__}, {args.threads} threads; {len(answers)} answers, one 384x384 image\n")
    print(f"{'size':5} {'plain s':>8} {'grouped s':>9} {'speed-up':>8} {'max |diff|':>10} {'same best':>9}")
    for size in args.sizes:
        cfg = get_config(size)
        model = model_from_state_dict(cfg, recipe_state_dict(cfg)).eval().fold_batchnorm()
        model.prepack()
        kw = dict(patch_images=image, patch_masks=torch.tensor([True]), prompts=prompt, constraints=trie)
        with torch.inference_mode():
            score_candidates(model, src, cands[:8], **kw)  # warm-up
            t = time.perf_counter()
            grouped = score_candidates(model, src, cands, **kw)
            t_grouped = time.perf_counter() - t
            t = time.perf_counter()
            plain = score_candidates(PlainDecode(model), src, cands, **kw)
            t_plain = time.perf_counter() - t
        diff = (grouped - plain).abs().max().item()
        same = bool(grouped.argmax() == plain.argmax())
        print(f"{size:5} {t_plain:8.2f} {t_grouped:9.2f} {t_plain / t_grouped:7.1f}x {diff:10.1e} {str(same):>9}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
