"""The project's own recipe resumes bit-exactly: ``recipes/scenes_mini.yaml`` (shortened), killed
with SIGKILL at several points of its stages and run again with the same command, ends with the
very weights of a run that was never interrupted (the trunk stage restarts, the others continue
from their last checkpoint, with the decoded-image and trunk-feature caches of a fresh process)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openofa.mini.scenes import write_dataset

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "scenes_mini.yaml"
SHORT = ["--set", "max_update=3", "--set", "total_num_update=3", "--set", "save_every_updates=2",
         "--set", "batch_size=8", "--set", "max_epoch=2", "--set", "log_every=1"]

DRIVER = '''
import os, sys
stage, update = sys.argv[1], int(sys.argv[2])
if stage == "trunk":  # the trunk stage is a hook of its own: kill at its n-th step
    import openofa.mini.trunk as trunk
    losses, calls = trunk.trunk_losses, [0]
    def counted(*a, **k):
        calls[0] += 1
        if calls[0] > update:
            os.kill(os.getpid(), 9)
        return losses(*a, **k)
    trunk.trunk_losses = counted
else:
    from openofa.train import trainer
    init = trainer.Trainer.__init__
    def patched(self, *a, **k):
        init(self, *a, **k)
        if os.path.basename(self.cfg.run_dir) == stage:
            self.hooks.append(lambda tr: os.kill(os.getpid(), 9) if tr.progress.num_updates == update else None)
    trainer.Trainer.__init__ = patched
from openofa.train.cli import main
sys.exit(main(sys.argv[3:]))
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_dataset(root / "data" / "scenes" / "train", n=24, seed=1000, questions=2, image_size=128)
    (root / "driver.py").write_text(DRIVER)
    return root


def _train(root: Path, run_dir: str, kill: tuple[str, int] | None = None) -> int:
    stage, update = kill or ("none", 0)
    cmd = [sys.executable, str(root / "driver.py"), stage, str(update), str(RECIPE), *SHORT, "--run-dir", run_dir]
    return subprocess.run(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


@pytest.fixture(scope="module")
def uninterrupted(workdir):
    assert _train(workdir, "plain") == 0
    return load_file(workdir / "plain" / "detect" / "final" / "model.safetensors")


@pytest.mark.parametrize("stage, update", [("trunk", 2), ("captions", 1), ("all", 3), ("ground", 2), ("detect", 3)])
def test_killed_and_run_again_ends_where_an_uninterrupted_run_ends(workdir, uninterrupted, stage, update):
    run_dir = f"killed_{stage}_{update}"
    assert _train(workdir, run_dir, (stage, update)) == -signal.SIGKILL
    assert not (workdir / run_dir / "detect" / "final").exists()
    assert _train(workdir, run_dir) == 0
    resumed = load_file(workdir / run_dir / "detect" / "final" / "model.safetensors")
    assert set(resumed) == set(uninterrupted)
    different = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert not different, f"{len(different)} of {len(resumed)} tensors differ, e.g. {different[:3]}"
