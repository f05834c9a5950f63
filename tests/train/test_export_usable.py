"""A trained model is usable as it comes out of training: its exported folder and its last.pt
load and run as the shipped model does, with the settings the run used and the tasks it learnt."""

from __future__ import annotations

import json

import torch

from openofa.mini.scenes import write_dataset


def test_exported_and_last_checkpoint_run_as_trained(tmp_path, capsys):
    import openofa
    from openofa.cli import main as ofa_main
    from openofa.train.cli import main

    files = write_dataset(tmp_path / "data", n=4, seed=2000, image_size=64)
    recipe = {"model": "mini", "batch_size": 4, "lr": 1e-3, "seed": 1, "num_workers": 0, "max_update": 2,
              "run_dir": str(tmp_path / "run"), "progress": False, "validate_every_epochs": 0,
              "task": "mixture", "mixture": {t: str(files[t]) for t in ("caption", "vqa", "ground")},
              "data": {"patch_image_size": 64, "max_src_length": 40, "max_tgt_length": 40,
                       "ground": {"max_image_size": 64, "prompt_type": "prev_output"},
                       "vqa": {"prompt_type": "prev_output"}}}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    assert main([str(path)]) == 0
    final, last = tmp_path / "run" / "final", tmp_path / "run" / "last.pt"
    m = openofa.load(final)
    settings = m.task_settings
    assert settings["tasks"] == ["caption", "vqa", "ground"] and settings["patch_image_size"] == 64
    assert settings["ground_prompt_type"] == "prev_output" and settings["prompt_type"] == "prev_output"
    assert settings["max_image_size"] == 64
    img = str(next((files["caption"].parent / "images").iterdir()))
    box = m.ground(img, "the circle")
    assert m.preprocess("ground").size == 64
    from_last = openofa.load(last)
    assert from_last.task_settings == settings
    sd, sd_last = m.model.state_dict(), from_last.model.state_dict()
    assert all(torch.equal(sd[k], sd_last[k]) for k in sd)
    assert from_last.ground(img, "the circle") == box
    capsys.readouterr()
    for model in (final, last):
        assert ofa_main(["ground", img, "-t", "the circle", "--model", str(model), "--no-progress"]) == 0
        assert ofa_main(["classify", img, "--classes", "circle,square", "--model", str(model)]) == 2
        assert "not trained for classify" in capsys.readouterr().err


def test_a_second_writer_into_a_run_folder_is_refused(tmp_path, capsys):
    """While one run holds the folder, another ``ofa train`` into it ends with a one-line error and
    writes nothing; once the first is gone (here killed: the lock is the OS's), it may go on."""
    import subprocess
    import sys

    from openofa.train.cli import main

    from train_support import MICRO

    recipe = {"task": "synthetic", "model": "tiny", "model_config": MICRO, "max_update": 1, "batch_size": 2,
              "run_dir": str(tmp_path / "run"), "progress": False, "validate_every_epochs": 0,
              "data": {"num_examples": 4, "src_len": 8, "tgt_len": 5, "image_size": 32}}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom openofa.train.lock import run_dir_lock\n"
        f"with run_dir_lock([{str(tmp_path / 'run')!r}]):\n    print('held', flush=True)\n    time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([str(path)]) == 2
        err = capsys.readouterr().err
        assert f"another training run is writing there (pid {holder.pid})" in err and err.count("\n") == 1
        assert not (tmp_path / "run" / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main([str(path)]) == 0 and (tmp_path / "run" / "last.pt").exists()
