"""Helpers of the data tests: small TSV / JSONL files in the original layouts, with the golden
test images encoded in base64."""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

from support import GOLDEN

IMAGES = GOLDEN / "images"
NAMES = ("a_200x150_rgb", "b_640x480_rgb", "c_320x240_gray")


@lru_cache(maxsize=None)
def png_bytes(name: str) -> bytes:
    return (IMAGES / f"{name}.png").read_bytes()


def b64(name: str, urlsafe: bool = False) -> str:
    data = png_bytes(name)
    return (base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)).decode("ascii")


def b64_with_url_chars(name: str) -> str:
    """URL-safe base64 of an image whose encoding actually contains '-' or '_'."""
    s = b64(name, urlsafe=True)
    assert "-" in s or "_" in s
    return s


def write_tsv(path: Path, rows: list[list[object]]) -> Path:
    path.write_text("".join("\t".join(str(c) for c in row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_jsonl(path: Path, objs: list[object]) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


def golden_preprocess() -> dict:
    return json.loads((GOLDEN / "preprocess.json").read_text())
