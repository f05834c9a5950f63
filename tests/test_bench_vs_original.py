"""benchmarks/bench_vs_original.py without the original: our side alone on its smallest setting."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_vs_original.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_vs_original", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ours_alone_smallest_setting(tmp_path):
    out = tmp_path / "rows.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "tiny", "--rows", "caption", "--batches", "1", "--rounds", "1",
         "--threads", "1", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ours alone" in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("tiny  caption")]
    assert table and table[-1].split()[2] == "1"
    data = json.loads(out.read_text())
    assert data["original"] is None and data["rounds"] == 1
    (row,) = data["rows"]
    assert (row["size"], row["row"], row["batch"]) == ("tiny", "caption", 1)
    assert 0 < row["ours_s"] < 120 and row["ours_peak_rss_mb"] > 100
    (tokens,) = row["ours_tokens"]
    assert 1 <= len(tokens) <= 17 and tokens[-1] == 2  # at most 16 tokens, then eos
    assert "original_s" not in row and "ratio" not in row
    # what the original's side reads: the same images as base64 rows, and the file in the released flags
    work = tmp_path / "work"
    assert len((work / "caption.tsv").read_text().splitlines()) == 8
    import torch

    cfg = torch.load(work / "tiny.pt", map_location="cpu", weights_only=False)["cfg"]["model"]
    assert cfg["_name"] == "ofa_tiny" and cfg["disable_entangle"] is True
    assert cfg["scale_attn"] and cfg["scale_fc"] and cfg["scale_heads"]


def test_not_a_checkout_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--original", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "is not an OFA checkout" in proc.stderr


def test_ragged_array_as_older_numpy():
    """Patch 3: the VQA collater's np.array of prompts of different lengths gives a 1-D object array."""
    shim = _module()._ragged_array_module(np)
    out = shim.array([[0, 5, 6], [0, 7]])
    assert out.dtype == object and out.shape == (2,) and out[1] == [0, 7]
    assert shim.array([[1, 2], [3, 4]]).shape == (2, 2)
    assert shim.int64 is np.int64


@pytest.mark.parametrize("rows", ["caption,nope"])
def test_unknown_row(rows):
    with pytest.raises(SystemExit):
        _module().main(["--rows", rows])
