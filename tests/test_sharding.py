"""``torchrun --nproc_per_node 2 -m openofa.cli <task> ...``: two processes share the inputs and
print exactly what one process prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from openofa.sharding import Ranks


def test_ranks_share_the_inputs_round_robin():
    assert Ranks(0, 2).mine(5) == [0, 2, 4] and Ranks(1, 2).mine(5) == [1, 3]
    assert Ranks().mine(3) == [0, 1, 2] and not Ranks().many
    assert Ranks(1, 2, 1).device("cuda") == "cuda:1" and Ranks(1, 2, 1).device("cpu") == "cpu"
    assert list(Ranks().gather(iter([(0, "a"), (1, "b")]))) == [(0, "a"), (1, "b")]


def test_two_processes_print_what_one_process_prints(tmp_path):
    from openofa.mini.scenes import make_scene

    for seed in range(5):  # an odd number: the ranks get 3 and 2
        make_scene(seed, (128, 128)).image.save(tmp_path / f"scene{seed}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    task = ["-m", "openofa.cli", "vqa", str(tmp_path), "-q", "what shape is the large object?", "--json",
            "--no-progress", "--batch-size", "2"]
    one = subprocess.run([sys.executable, *task], capture_output=True, text=True, env=env, timeout=300)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *task], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    ones, twos = ([json.loads(line) for line in out.stdout.splitlines()] for out in (one, two))
    assert len(ones) == 5
    # the same lines in the same order; a score may differ in its last digits (other batch shapes)
    assert [{**r, "score": None} for r in twos] == [{**r, "score": None} for r in ones]
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(ones, twos))
