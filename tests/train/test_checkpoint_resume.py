"""A run killed with SIGKILL and resumed ends with exactly the weights of a run never interrupted;
checkpoints are written atomically and read with weights_only=True."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from openofa.errors import OFAError
from openofa.train.checkpoint import (atomic_torch_save, capture_rng, export_weights, load_training_checkpoint,
                                      restore_rng)

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "train_support.py"
# dropout, attention/activation dropout, drop path (encoder, decoder, ResNet) all on; EMA on;
# validation every 2 updates, a checkpoint every 3, epochs of 4 updates (the last one shorter)
RUN = {"save_every_updates": 3, "validate_every_updates": 2, "ema_decay": 0.9}


def train(run_dir: Path, *, kill_after: int = 0, workers: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(SCRIPT), str(run_dir), "--config", json.dumps(RUN), "--num-workers", str(workers)]
    if kill_after:
        cmd += ["--kill-after", str(kill_after)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_sigkill_and_resume_gives_identical_weights(tmp_path):
    whole = tmp_path / "whole"
    r = train(whole)
    assert r.returncode == 0, r.stderr[-2000:]

    cut = tmp_path / "cut"
    r = train(cut, kill_after=5, workers=2)  # killed mid-epoch 2; last checkpoint at update 3
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert load_training_checkpoint(cut / "last.pt")["progress"]["num_updates"] == 3
    r = train(cut, kill_after=7, workers=2)  # resumes at 3, killed again after 7 (checkpoint at 6)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert "resumed from" in r.stdout
    r = train(cut)  # resumes at 6 and finishes
    assert r.returncode == 0, r.stderr[-2000:]

    a, b = load_training_checkpoint(whole / "last.pt"), load_training_checkpoint(cut / "last.pt")
    assert a["progress"] == b["progress"] and a["progress"]["finished"] and a["progress"]["num_updates"] == 8
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert set(sa) <= set(sb)
    for name in sa:
        for k in sa[name]:
            assert torch.equal(sa[name][k], sb[name][k]), (name, k)
    for name in set(sb) - set(sa):  # parameters that never get a gradient (unused modules):
        assert not sb[name]["exp_avg"].any()  # resuming gives them empty AdamW state
    for k in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]), k
    assert a["scheduler"] == b["scheduler"]
    # the exported weights load through the public API and are the trained ones
    import openofa

    m = openofa.load(cut / "final", fold_batchnorm=False).model
    sd = m.state_dict()
    for k, v in a["model"].items():
        assert torch.equal(sd[k], v), k
    # logs: one row per update, redone updates not duplicated
    rows = (cut / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows] == list(range(1, 9))
    assert (cut / "train_log.csv").read_text() .splitlines()[1:] != [] and (cut / "best" / "model.safetensors").is_file()


def test_atomic_save_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save({"format": "x", "v": torch.ones(2)}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"format": "x", "v": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_unreadable_checkpoints_are_one_line_errors(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(OFAError, match="cannot read training checkpoint"):
        load_training_checkpoint(bad)
    torch.save({"format": "something else"}, bad)
    with pytest.raises(OFAError, match="not an openofa training checkpoint"):
        load_training_checkpoint(bad)
    with pytest.raises(OFAError, match="no such checkpoint"):
        load_training_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(3)
    atomic_torch_save({"rng": capture_rng()}, tmp_path / "rng.pt")
    expect = (random.random(), float(np.random.rand()), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[:2] == expect[:2] and torch.equal(got[2], expect[2])


def test_export_replaces_the_folder_whole(tmp_path):
    from train_support import micro_model

    model = micro_model()
    folder = tmp_path / "best"
    export_weights(folder, model.config, model.state_dict())
    with torch.no_grad():
        model.encoder.layer_norm.weight.fill_(2.0)
    export_weights(folder, model.config, model.state_dict())
    import openofa

    loaded = openofa.load(folder).model
    assert torch.equal(loaded.encoder.layer_norm.weight, model.encoder.layer_norm.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
