"""``ofa train RECIPE [--set key=value ...] [--resume] [--run-dir DIR]``.

One process::

    python -m openofa.train.cli recipes/caption_base.yaml --set init_from=ofa_base.pt

Many processes (one machine or many) are started by torchrun, never by us::

    torchrun --nproc_per_node 8 -m openofa.train.cli recipes/caption_large.yaml

``RECIPE`` is a YAML/JSON file or the name of one in the repository's ``recipes/`` folder. A
run continues from ``<run_dir>/last.pt`` when it exists (``--resume`` insists on it,
``--fresh`` refuses to overwrite it). Bad input ends with ``error: ...`` and exit status 2.

This module is the command alone; :func:`openofa.train.run.run` trains one config (the model from
:mod:`openofa.train.model`, the data from :mod:`openofa.train.datasets`, the validation from
:mod:`openofa.train.validate`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from openofa.errors import OFAError
from openofa.train.run import run_stages


def build_parser(prog: str = "ofa train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="train or finetune an OFA model from a recipe")
    p.add_argument("recipe", help="a recipe file (YAML or JSON) or the name of one in recipes/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (data.max_src_length=100 for keys of a section); repeatable")
    p.add_argument("--run-dir", help="where checkpoints, logs and exported weights go (recipe: run_dir)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt; fail if there is none")
    g.add_argument("--fresh", action="store_true", help="start a new run; fail if RUN_DIR/last.pt exists")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return p


def configs_from_args(args: argparse.Namespace) -> list:
    """One config per stage of the recipe (most recipes have one)."""
    from openofa.train.recipe import find_recipe, load_stages

    return load_stages(find_recipe(args.recipe), _overrides(args))


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    if args.resume:
        overrides.append("resume=always")
    elif args.fresh:
        overrides.append("resume=never")
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configs = configs_from_args(args)
        if args.print_config:
            import json

            dicts = [cfg.to_dict() for cfg in configs]
            print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
            return 0
        from openofa.train.lock import run_dir_lock

        with run_dir_lock([cfg.run_dir for cfg in configs]):  # one writer per run folder
            summary = run_stages(configs)
    except OFAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run again with the same command to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    if summary.get("rank", 0) != 0:
        return 0
    best = summary.get("best")
    tail = f", best {summary['best_metric']} {best:.4g} at update {summary['best_update']}" if best is not None else ""
    print(f"done: {summary['num_updates']} updates in {summary['run_dir']}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

