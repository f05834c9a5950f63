"""The package's layout: every module imports; the command-line modules and the modules they run do
not import each other; the OFA core does not depend on the small model's own package
(``openofa.mini``), which plugs into training through ``openofa.train.extensions`` only.

The import graph is read from the sources with ``ast``, imports inside functions included (they
run later, but two modules that import each other that way still depend on each other)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import openofa

ROOT = Path(openofa.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {"openofa": ROOT / "__init__.py"}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("openofa", *parts))] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The openofa modules ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a import b``: the module a.b when there is one, else a
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # ``import a.b.c`` of a name inside a module
                target = target.rpartition(".")[0]
            if target.startswith("openofa") and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_the_module_list_is_the_package():
    walked = {m.name for m in pkgutil.walk_packages(openofa.__path__, "openofa.")}
    assert walked | {"openofa"} == set(MODULES)


@pytest.mark.parametrize("a, b", [("openofa.cli", "openofa.mini.demo"), ("openofa.cli", "openofa.mini.scenes"),
                                  ("openofa.train.cli", "openofa.mini.trunk"),
                                  ("openofa.train.cli", "openofa.train.run")])
def test_no_import_cycle(a, b):
    assert not (b in _reachable(a) and a in _reachable(b)), f"{a} and {b} import each other"


def test_the_moved_modules_are_gone():
    for name in ("openofa.demo", "openofa.scenes", "openofa.train.trunk", "openofa.train.box_attention"):
        assert name not in MODULES


@pytest.mark.parametrize("core", ["openofa.model", "openofa.train.trainer", "openofa.train.loss", "openofa.data",
                                  "openofa.tasks", "openofa.generation"])
def test_the_core_does_not_import_the_small_model(core):
    """Neither the core's modules nor anything they import, directly or not, imports openofa.mini."""
    names = [n for n in MODULES if n == core or n.startswith(core + ".")]
    assert names
    for name in names:
        mini = sorted(m for m in _reachable(name) | {name} if m == "openofa.mini" or m.startswith("openofa.mini."))
        assert not mini, f"{name} imports {mini}"


def test_train_cli_is_the_command_only():
    defined = {n.name for n in ast.parse(MODULES["openofa.train.cli"].read_text(encoding="utf-8")).body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert defined == {"build_parser", "configs_from_args", "_overrides", "main"}
