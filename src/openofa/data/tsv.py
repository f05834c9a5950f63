"""Stream inputs from the original's TSV files (one example per line, images in base64) for
the ``ofa`` command. Training and evaluation datasets (lazy, indexed, sharded) are in
:mod:`openofa.data.dataset`; their per-task layouts in :mod:`openofa.data.layouts`.

Column layouts follow the original's dataset files and their default ``--selected-cols``;
``columns`` overrides them (``{"image": 4, "text": 2}``). Lines are read one at a time, so a
large file is never held in memory. A short line is reported with its file and line number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from openofa.errors import OFAError

# task -> {field: column index} (the original's default selected columns)
LAYOUTS: dict[str, dict[str, int]] = {
    "caption": {"id": 0, "image": 4, "reference": 2},
    "vqa": {"id": 0, "question": 2, "reference": 3, "objects": 4, "image": 5},
    "ground": {"id": 0, "text": 2, "reference": 3, "image": 4},
    "entail": {"id": 0, "image": 2, "hypothesis": 3, "premise": 4, "reference": 5},
    "classify": {"image": 0, "reference": 2},  # column 1 is the class index, 2 its name
    "summarize": {"text": 0, "reference": 1},
    "classify-text": {"text": 0, "text2": 1, "reference": 2},
}


def parse_columns(spec: str) -> dict[str, int]:
    """``"image=4,text=2"`` -> ``{"image": 4, "text": 2}``."""
    out: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, idx = part.partition("=")
        if not sep or not idx.strip().isdigit():
            raise OFAError(f"bad column spec {part!r}: expected name=index, e.g. image=4")
        out[name.strip()] = int(idx)
    return out


def read_tsv(path: str | Path, task: str, columns: dict[str, int] | None = None) -> Iterator[dict[str, str]]:
    """Yield one ``{field: text}`` per line, plus ``_where`` = "file:line" for error messages."""
    layout = columns or LAYOUTS.get(task)
    if layout is None:
        raise OFAError(f"no TSV layout known for task {task!r}; give the columns (e.g. --cols image=0)")
    need = max(layout.values()) + 1
    path = Path(path)
    try:
        fh = path.open("r", encoding="utf-8", newline="\n")
    except OSError as e:
        raise OFAError(f"cannot read {path}: {e.strerror}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cells = line.split("\t")
            if len(cells) < need:
                raise OFAError(f"{path}:{lineno}: expected at least {need} tab-separated columns "
                               f"for task {task}, found {len(cells)}")
            row = {name: cells[i] for name, i in layout.items()}
            row["_where"] = f"{path}:{lineno}"
            yield row
