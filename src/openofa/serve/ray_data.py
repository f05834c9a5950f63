"""Batch inference with Ray Data: a task over a large TSV / JSONL file in the task's layout or a
folder of images, read exactly as ``ofa <task>`` reads them, run by ``--actors`` actors that
each load the model once (``map_batches`` with a class), written as results arrive to a JSONL
file or a folder of Parquet parts. A run that stops can be started again with the same command:
inputs whose results are already written are skipped. ::

    python -m openofa.serve.ray_data caption photos/ --out captions.jsonl --actors 4
    python -m openofa.serve.ray_data vqa vqa_test.tsv --model vqa_base_best.pt --out answers/ --format parquet

Every other flag is ``ofa <task>``'s (``--model``, ``-q``, ``--answers``, ``--beam`` ...). Each
JSONL line is the command line's ``--json`` object plus ``index`` (the input's place); an input
that cannot be read gives ``{"index", "input", "error"}``. A JSONL file is rewritten in input order
when the run completes. Needs the ``ray`` extra (``pip install openofa[ray]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from openofa.errors import OFAError


class Predictor:
    """One Ray Data actor: loads the model once, then answers batches of inputs."""

    def __init__(self, task: str, load: dict[str, Any], options: dict[str, Any]) -> None:
        from openofa.api import OFA

        self.task = task
        self.options = options
        self.ofa = OFA.load(load.pop("model", None), **load)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [json.loads(s) for s in batch["item"]]
        inputs = [{k: v for k, v in it.items() if not k.startswith("_")} for it in items]
        lines = []
        for (i, res), item, index in zip(self.ofa.stream(self.task, inputs, batch_size=len(inputs), skip_bad=True,
                                                         **self.options), items, batch["index"]):
            head = {"index": int(index), "input": item["_name"]}
            lines.append(json.dumps({**head, "error": str(res)} if isinstance(res, OFAError) else {**head, **res},
                                    ensure_ascii=False))
        return {"index": batch["index"], "line": np.array(lines, dtype=object)}


def done_indices(out: Path, fmt: str) -> set[int]:
    """The inputs whose results an earlier run wrote already."""
    if fmt == "jsonl":
        if not out.is_file():
            return set()
        done = set()
        for line in out.read_text(encoding="utf-8").splitlines():
            try:
                done.add(int(json.loads(line)["index"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short when the run stopped: that input is run again
        return done
    import pyarrow.parquet as pq

    return {int(i) for part in sorted(out.glob("part-*.parquet")) for i in pq.read_table(part, columns=["index"])["index"].to_pylist()}


def run(task: str, items: list[dict[str, Any]], out: str | Path, *, load: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None, actors: int = 2, batch_size: int = 8, num_cpus: float = 1,
        fmt: str | None = None) -> Path:
    """Run ``task`` on ``items`` (the command line's inputs, each with ``_name``) with Ray Data,
    writing to ``out``; returns ``out``. Starts a local Ray instance when none is running."""
    import ray

    out = Path(out)
    fmt = fmt or ("jsonl" if out.suffix == ".jsonl" else "parquet")
    if fmt not in ("jsonl", "parquet"):
        raise OFAError(f"unknown output format {fmt!r}; expected jsonl or parquet")
    if fmt == "jsonl" and out.is_file():  # a line cut short when a run stopped is dropped: its input runs again
        data = out.read_bytes()
        if data and not data.endswith(b"\n"):
            out.write_bytes(data[: data.rfind(b"\n") + 1])
    done = done_indices(out, fmt)
    todo = [{"index": i, "item": json.dumps(it, ensure_ascii=False)} for i, it in enumerate(items) if i not in done]
    if todo:
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        blocks = min(len(todo), max(actors, -(-len(todo) // batch_size)), 200)  # every actor gets work
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        ds = ds.map_batches(Predictor, fn_constructor_kwargs={"task": task, "load": dict(load or {}),
                                                              "options": dict(options or {})},
                            batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=num_cpus,
                            batch_format="numpy")
        if fmt == "jsonl":
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a", encoding="utf-8") as f:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    f.write("".join(line + "\n" for line in batch["line"]))
                    f.flush()
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            out.mkdir(parents=True, exist_ok=True)
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                table = pa.table({"index": [int(i) for i in batch["index"]], "line": [str(s) for s in batch["line"]]})
                pq.write_table(table, out / f"part-{int(min(batch['index'])):09d}.parquet")
    if fmt == "jsonl" and out.is_file():  # complete: the lines in input order
        lines = {}
        for line in out.read_text(encoding="utf-8").splitlines():
            try:
                lines[int(json.loads(line)["index"])] = line
            except (ValueError, KeyError, TypeError):
                continue
        if len(lines) == len(items):
            tmp = out.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(lines[i] + "\n" for i in sorted(lines)), encoding="utf-8")
            tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    from openofa.cli import _options, _value, build_parser, collect_inputs
    from openofa.tasks import TASKS

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m openofa.serve.ray_data", description=__doc__.split("\n\n")[0],
                                epilog="Other flags are those of ofa <task>.")
    p.add_argument("task", choices=list(TASKS))
    p.add_argument("--out", required=True, help="a .jsonl file, or a folder for Parquet parts")
    p.add_argument("--format", choices=["jsonl", "parquet"], help="default: by --out's suffix")
    p.add_argument("--actors", type=int, default=2, help="model copies (Ray actors)")
    p.add_argument("--num-cpus", type=float, default=1, help="CPUs per actor")
    p.add_argument("--address", help="an existing Ray cluster (default: a local instance)")
    ours, rest = p.parse_known_args(argv)
    try:
        args = build_parser().parse_args([ours.task, *rest])
        items = collect_inputs(args)
        spec = TASKS[ours.task]
        options = _options(args)
        options.update({f.name: _value(f, getattr(args, f.name)) for f in spec.options
                        if getattr(args, f.name, None) is not None})
        load = {"model": args.model, "device": args.device, "dtype": args.dtype, "ema": args.ema,
                "image_size": args.image_size, "zero_shot": args.zero_shot, "any_task": args.any_task}
        if ours.address:
            import ray

            ray.init(address=ours.address)
        out = run(ours.task, items, ours.out, load=load, options=options, actors=ours.actors,
                  batch_size=args.batch_size, num_cpus=ours.num_cpus, fmt=ours.format)
    except OFAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
