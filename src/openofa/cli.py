"""Command line: ``ofa caption|vqa|ground|entail|classify|classify-text|summarize|convert``.

Inputs are image files, folders of images, or a TSV file in the original's layout. Results go
to stdout, one line per input (``--json`` for JSON lines); progress goes to stderr. Bad input
ends with one line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from openofa.errors import OFAError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGE_TASKS = ("caption", "vqa", "ground", "entail", "classify")
TEXT_TASKS = ("classify-text", "summarize")


def _decoding_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding (defaults: the original's evaluation script for the task)")
    g.add_argument("--beam", type=int, dest="beam_size")
    g.add_argument("--max-len-a", type=float)
    g.add_argument("--max-len-b", type=int)
    g.add_argument("--min-len", type=int)
    g.add_argument("--no-repeat-ngram-size", type=int)
    g.add_argument("--lenpen", type=float, dest="len_penalty")
    g.add_argument("--unnormalized", action="store_const", const=False, dest="normalize_scores")
    g.add_argument("--temperature", type=float)
    g.add_argument("--sampling", action="store_const", const=True)
    g.add_argument("--sampling-topk", type=int)
    g.add_argument("--sampling-topp", type=float)
    g.add_argument("--seed", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofa", description="OFA vision-language tasks")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", "-m", help="official .pt, Hugging Face folder, or our folder "
                        "(default: the project's own small model)")
    common.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                        help="EMA weights of an official checkpoint: by default used when the file carries them, "
                             "as the original's evaluation does (the VQA files); --no-ema for the plain weights")
    common.add_argument("--zero-shot", action="store_true",
                        help="the original's zero-shot settings for a pretrained file (VQA: 480 px, no decoder "
                             "prompt, beam 20 unnormalised; grounding 480 px; entailment 384 px)")
    common.add_argument("--device", default="cpu")
    common.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "auto"],
                        help="image trunk and encoder precision (the decoder stays fp32, see --decoder-dtype); "
                             "auto: bf16/fp16 where this machine computes them faster, else fp32")
    common.add_argument("--decoder-dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="decoder precision; bf16 can be faster on hardware with a fast bf16 unit but "
                             "can flip near-ties")
    common.add_argument("--image-size", type=int, help="override the patch image size")
    common.add_argument("--batch-size", type=int, default=8)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    common.add_argument("--cols", help="TSV columns, e.g. image=4,text=2 (default: the original layout)")
    common.add_argument("--no-progress", action="store_true")

    def task(name: str, help_: str, inputs: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_)
        if inputs:
            p.add_argument("inputs", nargs="*", help="image files, folders, or a .tsv in the original layout")
        _decoding_options(p)
        return p

    task("caption", "describe images")
    p = task("vqa", "answer a question about images")
    p.add_argument("--question", "-q")
    p.add_argument("--answers", help="comma-separated candidate answers, or @file with one per line")
    p.add_argument("--mode", choices=["beam", "trie", "allcand"])
    p = task("ground", "find the box a phrase refers to")
    p.add_argument("--text", "-t")
    p.add_argument("--draw", help="folder to write each image with its predicted box drawn")
    p.add_argument("--any-token", action="store_true",
                   help="decode over the whole vocabulary like the original (default: location tokens only)")
    p.add_argument("--faithful", action="store_true",
                   help="convert the four tokens to pixels as the original does, whatever they are "
                        "(no clamping; default: a box only from location tokens, clamped to the image)")
    p = task("entail", "does the image support the hypothesis? yes / no / maybe")
    p.add_argument("--hypothesis")
    p.add_argument("--premise")
    p = task("classify", "choose a class name for each image")
    p.add_argument("--classes", required=True, help="comma-separated class names, or @file with one per line")
    p = task("classify-text", "GLUE-style text classification", inputs=False)
    p.add_argument("--task", default="mnli", dest="glue_task")
    p.add_argument("--text", required=False)
    p.add_argument("--text2")
    p.add_argument("inputs", nargs="*", help="a .tsv of texts")
    p = task("summarize", "summarize texts", inputs=False)
    p.add_argument("--text")
    p.add_argument("inputs", nargs="*", help="text files (one document per line) or a .tsv")

    p = sub.add_parser("eval", parents=[common], help="predict an evaluation file and print the task's metric")
    p.add_argument("task", help="caption, vqa, ground, entail, classify, summarize, or a GLUE task (mnli, sst2, ...)")
    p.add_argument("data", help="a TSV in the original layout, a JSONL file, or a folder with <split>.jsonl/.tsv")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="folder for predictions.json and metrics.json")
    p.add_argument("--limit", type=int, help="evaluate only the first N rows")
    p.add_argument("--mode", choices=["beam", "trie", "allcand"], help="vqa: how to answer")
    p.add_argument("--classes", help="classify: class names (default: the labels found in the file)")
    _decoding_options(p)

    p = sub.add_parser("demo", help="caption, VQA and grounding on an example image")
    p.add_argument("--model", "-m")
    p.add_argument("--out", default="ofa-demo", help="folder for the example image and the drawn box")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])

    sub.add_parser("train", help="train or finetune from a recipe (see docs/training.md)", add_help=False)

    p = sub.add_parser("scenes", help="write procedural scenes (images + caption/vqa/ground JSONL)")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--questions", type=int, default=None, help="at most this many questions per scene")
    p.add_argument("--image-size", type=int, default=None,
                   help="store images shrunk to this side (boxes scaled), e.g. the model's input size")

    p = sub.add_parser("convert", help="convert a checkpoint between formats")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", default="ours", choices=["ours", "official", "hf"])
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="write the EMA weights (default: when the file carries them); --no-ema for the plain ones")
    return parser


def _word_list(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as e:
            raise OFAError(f"cannot read {path}: {e.strerror}") from None
    return [w.strip() for w in spec.split(",") if w.strip()]


def _image_files(inputs: list[str]) -> Iterator[str]:
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise OFAError(f"folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            yield from (str(f) for f in files)
        elif not path.exists():
            raise OFAError(f"input not found: {path}")
        else:
            yield str(path)


def collect_inputs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Turn the command line into a list of task inputs, each with a ``_name`` for the output."""
    from openofa.data.tsv import parse_columns, read_tsv

    cmd = args.command
    cols = parse_columns(args.cols) if args.cols else None
    items: list[dict[str, Any]] = []
    inputs = list(getattr(args, "inputs", []) or [])
    tsvs = [i for i in inputs if i.lower().endswith(".tsv")]
    others = [i for i in inputs if not i.lower().endswith(".tsv")]
    for tsv in tsvs:
        for row in read_tsv(tsv, cmd, cols):
            item = {"_name": row.get("id") or row["_where"], "_where": row["_where"]}
            for key in ("image", "question", "text", "hypothesis", "premise", "text2"):
                if key in row:
                    item[key] = row[key]
            if "objects" in row and row["objects"]:
                item["objects"] = row["objects"].split("&&")
            items.append(item)
    if cmd in IMAGE_TASKS:
        for f in _image_files(others):
            items.append({"_name": f, "image": f})
        extra = {"vqa": ("question",), "ground": ("text",), "entail": ("hypothesis", "premise")}.get(cmd, ())
        for item in items:
            for key in extra:
                if getattr(args, key, None) is not None:
                    item[key] = getattr(args, key)
            if cmd == "vqa" and not item.get("question"):
                raise OFAError(f"vqa: no question for {item['_name']} (give --question)")
            if cmd == "ground" and not item.get("text"):
                raise OFAError(f"ground: no text for {item['_name']} (give --text)")
            if cmd == "entail" and not item.get("hypothesis"):
                raise OFAError(f"entail: no hypothesis for {item['_name']} (give --hypothesis)")
    elif cmd == "summarize":
        for f in others:
            path = Path(f)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise OFAError(f"cannot read {path}: {e.strerror}") from None
            items += [{"_name": f"{path}:{i}", "text": ln} for i, ln in enumerate(lines, 1) if ln.strip()]
        if args.text:
            items.append({"_name": "text", "text": args.text})
    elif cmd == "classify-text":
        for item in items:
            item["glue_task"] = args.glue_task
        if args.text:
            items.append({"_name": "text", "text": args.text, "text2": args.text2, "glue_task": args.glue_task})
    if not items:
        raise OFAError(f"{cmd}: no inputs given")
    return items


def _format(cmd: str, result: dict[str, Any]) -> str:
    if cmd == "caption":
        return result["caption"]
    if cmd == "vqa":
        return result["answer"]
    if cmd == "ground":
        box = result["box"]
        return "none" if box is None else " ".join(f"{v:.1f}" for v in box)
    if cmd == "summarize":
        return result["summary"]
    return result["label"]


def run_task(args: argparse.Namespace) -> int:
    from openofa.api import OFA

    items = collect_inputs(args)
    ofa = OFA.load(args.model, ema=args.ema, device=args.device, dtype=args.dtype,
                   decoder_dtype=args.decoder_dtype, image_size=args.image_size, zero_shot=args.zero_shot)
    options = _options(args)
    cmd = args.command
    if cmd == "vqa":
        options["answers"] = _word_list(args.answers)
        options["mode"] = args.mode
    if cmd == "classify":
        options["classes"] = _word_list(args.classes)
    if cmd == "ground" and args.any_token:
        options["restrict_to_bins"] = False
    if cmd == "ground" and args.faithful:
        options["faithful"] = True
    task_inputs = [{k: v for k, v in it.items() if not k.startswith("_")} for it in items]
    results = ofa.run(cmd, task_inputs, batch_size=args.batch_size,
                      progress=not args.no_progress and len(items) > 1, **options)
    for item, res in zip(items, results):
        if cmd == "ground" and args.draw:
            src = item.get("image")
            out = Path(args.draw) / (Path(item["_name"]).stem + "_box.png")
            from openofa.vision.draw import draw_box

            draw_box(src, res["box"], out, item.get("text", ""))
            res = {**res, "drawn": str(out)}
        if args.json:
            print(json.dumps({"input": item["_name"], **res}, ensure_ascii=False))
        else:
            print(f"{item['_name']}\t{_format(cmd, res)}")
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("beam_size", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram_size",
                                          "len_penalty", "normalize_scores", "temperature", "sampling",
                                          "sampling_topk", "sampling_topp", "seed") if getattr(args, k, None) is not None}


def run_eval(args: argparse.Namespace) -> int:
    from openofa.api import OFA
    from openofa.data.tsv import parse_columns
    from openofa.evaluate import evaluate

    ofa = OFA.load(args.model, ema=args.ema, device=args.device, dtype=args.dtype,
                   decoder_dtype=args.decoder_dtype, image_size=args.image_size, zero_shot=args.zero_shot)
    options = _options(args)
    if args.mode:
        options["mode"] = args.mode
    metrics = evaluate(ofa, args.task, args.data, split=args.split,
                       columns=parse_columns(args.cols) if args.cols else None, out_dir=args.out,
                       limit=args.limit, batch_size=args.batch_size, progress=not args.no_progress,
                       classes=_word_list(args.classes), **options)
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            shown = f"{100 * value:.2f}" if isinstance(value, float) else value
            print(f"{key}: {shown}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from openofa.checkpoints import convert

    convert(args.src, args.dst, fmt=args.to, ema=args.ema)
    print(f"wrote {args.dst}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":  # the trainer has its own parser (also run by torchrun)
        from openofa.train.cli import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            return run_convert(args)
        if args.command == "scenes":
            from openofa.mini.scenes import write_dataset

            files = write_dataset(args.out, n=args.n, seed=args.seed, questions=args.questions,
                                  image_size=args.image_size)
            print("\n".join(str(p) for p in files.values()))
            return 0
        if args.command == "eval":
            return run_eval(args)
        if args.command == "demo":
            from openofa.mini.demo import run_demo

            return run_demo(args.model, args.out, args.dtype)
        return run_task(args)
    except OFAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
