"""Command line: ``ofa <task> ...`` for every task of :mod:`openofa.tasks`, plus ``eval``, ``train``,
``demo``, ``scenes`` and ``convert``.

Each task's subcommand is built from the task's declaration: its input fields become flags
(``--question``), its options too (``--answers``), tasks that return boxes get ``--draw``. Inputs
are image files, folders of images, text files (text tasks: one input per line), or a TSV / JSONL
file in the task's layout. Results go to stdout, one line per input (``--json`` for JSON lines);
progress goes to stderr. Bad input ends with one line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from openofa.errors import OFAError
from openofa.tasks import TASKS, Task
from openofa.vision.io import IMAGE_SUFFIXES

DATA_SUFFIXES = (".tsv", ".jsonl")


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
    common.add_argument("--any-task", action="store_true",
                        help="run a task the model records it was not trained for (refused by default)")
    common.add_argument("--adapter", help="an adapter folder (LoRA, adapters, prefix or BitFit, peft's layout) "
                        "applied on top of --model")
    common.add_argument("--device", default="cpu")
    common.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "int8", "int8-bf16", "auto"],
                        help="image trunk and encoder precision (the decoder stays fp32, see --decoder-dtype); "
                             "auto: bf16/fp16 where this machine computes them faster, else fp32; "
                             "int8 (CPU): the image trunk in static int8, the rest fp32 (see --calibration); "
                             "int8-bf16: the encoder's transformer in bf16 too")
    common.add_argument("--calibration", action="append", metavar="PATH",
                        help="with --dtype int8 or int8-bf16: an image or a folder of images (repeatable) like the ones you will run, on which "
                             "the int8 trunk measures its activation ranges (default: 16 synthetic scenes)")
    common.add_argument("--decoder-dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="decoder precision; bf16 can be faster on hardware with a fast bf16 unit but "
                             "can flip near-ties")
    common.add_argument("--early-exit", metavar="T", help="MuE early exit: skip the remaining layers once a layer's "
                        "output has cosine similarity > T with its input; T in (0, 1], or ENC,DEC thresholds "
                        "(off by default; see docs/early_exit.md)")
    common.add_argument("--image-size", type=int, help="override the patch image size")
    common.add_argument("--batch-size", type=int, default=8)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    common.add_argument("--cols", help="TSV columns, e.g. image=4,text=2 (default: the original layout)")
    common.add_argument("--no-progress", action="store_true")


    for spec in TASKS.values():
        _task_parser(sub, spec, common)

    p = sub.add_parser("eval", parents=[common], help="predict an evaluation file and print the task's metric")
    p.add_argument("task", help=f"{', '.join(t for t in TASKS if t != 'classify-text')}, or a GLUE task (mnli, sst2, ...)")
    p.add_argument("data", help="a TSV in the original layout, a JSONL file, or a folder with <split>.jsonl/.tsv")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="folder for predictions.json and metrics.json")
    p.add_argument("--limit", type=int, help="evaluate only the first N rows")
    p.add_argument("--mode", choices=["beam", "trie", "allcand"], help="vqa: how to answer")
    p.add_argument("--classes", help="classify: class names (default: the labels found in the file)")
    p.add_argument("--fid-stats", help="imagine: reference Inception statistics (.npz with mu, sigma) for FID and IS")
    _decoding_options(p)

    p = sub.add_parser("demo", help="caption, VQA and grounding on an example image")
    p.add_argument("--model", "-m")
    p.add_argument("--out", default="ofa-demo", help="folder for the example image and the drawn box")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])

    sub.add_parser("train", help="train or finetune from a recipe (see docs/training.md)", add_help=False)

    from openofa.serve.command import add_parser as add_serve_parser
    add_serve_parser(sub)
    from openofa.export.command import add_parser as add_export_parser
    add_export_parser(sub)

    p = sub.add_parser("scenes", help="write procedural scenes (images + caption/vqa/ground JSONL)")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--questions", type=int, default=None, help="at most this many questions per scene")
    p.add_argument("--image-size", type=int, default=None,
                   help="store images shrunk to this side (boxes scaled), e.g. the model's input size")
    p.add_argument("--size-questions", action="store_true",
                   help="also vqa_size.jsonl: 'is the circle small or large?' (the LoRA example's new task)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--draw", action="store_true",
                       help="write the drawing model's scenes instead: 64 px images and draw.jsonl (id, image, text)")
    which.add_argument("--read", action="store_true",
                       help="write the reading model's scenes instead: 128 px text lines, ocr.jsonl (id, image, text, "
                            "kind) and detection.jsonl (every character's box)")

    p = sub.add_parser("convert", help="convert a checkpoint between formats")
    p.add_argument("src")
    p.add_argument("dst")
    from openofa.checkpoints.formats import FORMATS
    p.add_argument("--to", default="ours", choices=list(FORMATS), help="checkpoint format to write")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="write the EMA weights (default: when the file carries them); --no-ema for the plain ones")
    return parser


def _task_parser(sub, spec: type[Task], common: argparse.ArgumentParser) -> None:
    """The subcommand of one task, from its input fields and options."""
    p = sub.add_parser(spec.name, parents=[common], help=spec.help, description=spec.help)
    what = "image files, folders" if spec.takes_image() else "text files (one input per line)"
    if spec.literal_inputs:
        what = "texts (quoted), " + what
    p.add_argument("inputs", nargs="*", help=f"{what}, or a .tsv/.jsonl file in the task's layout")
    for f in spec.inputs + spec.options:
        if f.type == "image":
            continue
        names = [f.cli_flag] + ([f.short] if f.short else [])
        if f.type == "bool":
            p.add_argument(*names, dest=f.name, action="store_false" if f.negate else "store_true",
                           default=None, help=f.help)
        elif f.type == "choice":
            p.add_argument(*names, dest=f.name, choices=f.choices, help=f.help)
        elif f.type == "int":
            p.add_argument(*names, dest=f.name, type=int, help=f.help)
        else:
            p.add_argument(*names, dest=f.name, help=f.help)
    p.add_argument("--skip-bad", action="store_true",
                   help="report an input that cannot be read (file, line) on stderr and go on with the others "
                        "(exit status 2 at the end); without it the first one stops the run")
    if spec.draws:
        p.add_argument("--draw", help="folder to write each image with its boxes drawn")
    if spec.writes_images:
        p.add_argument("--out", default="ofa-images", help="folder for the images (default: ofa-images)")
    _decoding_options(p)


def _word_list(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as e:
            raise OFAError(f"cannot read {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise OFAError(f"{path}: not UTF-8 text") from None
    return [w.strip() for w in spec.split(",") if w.strip()]


def _value(field, raw: Any) -> Any:
    return _word_list(raw) if field.type == "texts" and isinstance(raw, str) else raw


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


def _text_lines(inputs: list[str], field: str) -> Iterator[dict[str, Any]]:
    for name in inputs:
        path = Path(name)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise OFAError(f"input not found: {path}") from None
        except OSError as e:
            raise OFAError(f"cannot read {path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise OFAError(f"{path}: not UTF-8 text (byte {e.start})") from None
        yield from ({"_name": f"{path}:{i}", field: ln} for i, ln in enumerate(lines, 1) if ln.strip())


def _data_layout(spec: Task, args: argparse.Namespace):
    """The layout a data file given to the task is read with (a GLUE task's own for classify-text)."""
    layout = spec.layout_for({f.name: getattr(args, f.name, None) for f in spec.inputs + spec.options})
    if layout is None:
        raise OFAError(f"{spec.name} reads no data files; give its inputs as flags")
    return layout


def collect_inputs(args: argparse.Namespace, bad: list[str] | None = None) -> list[dict[str, Any]]:
    """Turn the command line into a list of task inputs, each with a ``_name`` for the output
    (and ``_where``, file:line, for rows of a data file). With ``bad`` (a list) a data row that
    cannot be read is reported there instead of raising."""
    from openofa.data.dataset import open_records
    from openofa.data.records import BadRow
    from openofa.data.layouts import resolve_columns

    spec = TASKS[args.command]()
    inputs = list(getattr(args, "inputs", []) or [])
    data = [i for i in inputs if i.lower().endswith(DATA_SUFFIXES)]
    others = [i for i in inputs if not i.lower().endswith(DATA_SUFFIXES)]
    columns = None
    if args.cols:
        columns = resolve_columns(_data_layout(spec, args).task, args.cols)  # checked even without a data file
    items: list[dict[str, Any]] = []
    for path in data:
        layout = _data_layout(spec, args)
        if not Path(path).is_file():
            raise OFAError(f"input not found: {path}")
        reader = open_records(layout.task, path, columns=columns if path.lower().endswith(".tsv") else None,
                              targets=False)
        for i in range(len(reader)):
            try:
                rec = reader.record(i)
            except BadRow as e:
                if bad is None:
                    raise
                bad.append(str(e))
                continue
            item = {k: v for k, v in spec.inputs_of(rec, layout).items() if v is not None}
            items.append({"_name": str(rec.id) if "id" in layout.fields else rec.where, "_where": rec.where, **item})
    if spec.takes_image():
        items += [{"_name": f, "image": f} for f in _image_files(others)]
    else:
        first = next(f.name for f in spec.inputs if f.required)
        if spec.literal_inputs:  # a positional input that is not a file is the text itself
            texts = [i for i in others if not Path(i).is_file()]
            others = [i for i in others if Path(i).is_file()]
            items += [{"_name": t, first: t} for t in texts]
        items += list(_text_lines(others, first))
    given = {f.name: _value(f, getattr(args, f.name)) for f in spec.inputs
             if f.type != "image" and getattr(args, f.name, None) is not None}
    if not items and given and not spec.takes_image():
        items.append({"_name": "text"})
    for item in items:
        for name, value in given.items():
            item.setdefault(name, value)
        for f in spec.inputs:
            if f.required and item.get(f.name) is None:
                raise OFAError(f"{spec.name}: no {f.name} for {item['_name']} (give {f.cli_flag})")
    if not items:
        raise OFAError(f"{spec.name}: no inputs given")
    return items


def _draw_path(folder: Path, name: str, used: set[str]) -> Path:
    """``<stem>_box.png`` in ``folder``, numbered when two inputs share a stem."""
    stem = Path(name).stem or "input"
    out, n = f"{stem}_box.png", 1
    while out in used:
        n += 1
        out = f"{stem}_{n}_box.png"
    used.add(out)
    return folder / out


def _load(args: argparse.Namespace):
    """The model of the command line, named on stderr (what it is, what it was trained for)."""
    from openofa.api import OFA
    from openofa.vision.calibration import calibration_files

    model = args.model
    if model is None:  # the shipped model for this task (drawing for imagine, reading for ocr)
        from openofa.weights import TASK_MODELS

        command = getattr(args, "command", None)
        spec = TASKS.get(args.task if command == "eval" else command)
        model = TASK_MODELS.get(spec.name if spec is not None else "")
    ofa = OFA.load(model, ema=args.ema, device=args.device, dtype=args.dtype,
                   decoder_dtype=args.decoder_dtype, image_size=args.image_size, zero_shot=args.zero_shot,
                   any_task=args.any_task, adapter=getattr(args, "adapter", None),
                   early_exit=getattr(args, "early_exit", None),
                   calibration=calibration_files(getattr(args, "calibration", None)))
    print(f"model: {ofa.describe()}", file=sys.stderr)
    return ofa


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line ``warning: ...`` on stderr (no source line)."""
    print(f"warning: {message}", file=sys.stderr)


def run_task(args: argparse.Namespace) -> int:
    from openofa.sharding import Ranks
    from openofa.vision.draw import draw_boxes

    spec = TASKS[args.command]()
    ranks = Ranks.from_env()  # torchrun: each rank runs its share, rank 0 prints all (openofa/sharding.py)
    bad: list[str] | None = [] if args.skip_bad else None
    items = collect_inputs(args, bad)
    for message in (bad or []) if ranks.main else []:
        print(f"skipped: {message}", file=sys.stderr)
    args.device = ranks.device(args.device)
    ofa = _load(args)
    options = _options(args)
    for f in spec.options:
        if getattr(args, f.name, None) is not None:
            options[f.name] = _value(f, getattr(args, f.name))
    mine = ranks.mine(len(items))
    task_inputs = [{k: v for k, v in items[i].items() if not k.startswith("_")} for i in mine]
    results = ofa.stream(spec, task_inputs, batch_size=args.batch_size, skip_bad=args.skip_bad,
                         progress=not args.no_progress and len(items) > 1 and ranks.main, **options)
    results = ranks.gather((mine[j], res) for j, res in results)
    used: set[str] = set()
    skipped = len(bad or [])
    for i, res in results:  # printed as each batch is done: an interrupted run keeps what it printed
        item = items[i]
        if isinstance(res, OFAError):
            where = item.get("_where") or item["_name"]
            message = str(res)
            print(f"skipped: {message if where in message else f'{where}: {message}'}", file=sys.stderr)
            skipped += 1
            continue
        if spec.writes_images:
            res = spec.save(res, Path(args.out), item["_name"], used)
        if getattr(args, "draw", None):
            out = _draw_path(Path(args.draw), item["_name"], used)
            draw_boxes(item["image"], spec.boxes(res), out, item.get("text", ""))
            res = {**res, "drawn": str(out)}
        if args.json:
            print(json.dumps({"input": item["_name"], **res}, ensure_ascii=False), flush=True)
        else:
            print(f"{item['_name']}\t{spec.format(res)}", flush=True)
    if skipped:
        print(f"error: {skipped} input(s) skipped (see above)", file=sys.stderr)
        return 2
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("beam_size", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram_size",
                                          "len_penalty", "normalize_scores", "temperature", "sampling",
                                          "sampling_topk", "sampling_topp", "seed") if getattr(args, k, None) is not None}


def run_eval(args: argparse.Namespace) -> int:
    from openofa.evaluate import evaluate

    ofa = _load(args)
    options = _options(args)
    if args.mode:
        options["mode"] = args.mode
    if args.fid_stats:
        options["fid_stats"] = args.fid_stats
    metrics = evaluate(ofa, args.task, args.data, split=args.split,
                       columns=args.cols, out_dir=args.out,
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
    import warnings

    warnings.showwarning = _show_warning
    try:
        if args.command == "convert":
            return run_convert(args)
        if args.command == "scenes" and args.read:
            from openofa.mini.read import write_reading_dataset

            print(write_reading_dataset(args.out, n=args.n, seed=args.seed))
            return 0
        if args.command == "scenes" and args.draw:
            from openofa.mini.draw import write_drawing_dataset

            print(write_drawing_dataset(args.out, n=args.n, seed=args.seed))
            return 0
        if args.command == "scenes":
            from openofa.mini.scenes import write_dataset

            files = write_dataset(args.out, n=args.n, seed=args.seed, questions=args.questions,
                                  image_size=args.image_size, size_questions=args.size_questions)
            print("\n".join(str(p) for p in files.values()))
            return 0
        if args.command == "eval":
            return run_eval(args)
        if args.command == "serve":
            from openofa.serve.command import run as serve

            return serve(args)
        if args.command == "export":
            from openofa.export.command import run as export

            return export(args)
        if args.command == "demo":
            from openofa.mini.demo import run_demo

            return run_demo(args.model, args.out, args.dtype)
        return run_task(args)
    except OFAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be written, a path that is a file ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
