"""Multi-task training data: several task files mixed into one dataset and collated together."""

from __future__ import annotations

import torch

from openofa.config import get_config
from openofa.scenes import write_dataset
from openofa.train.cli import build_datasets
from openofa.train.recipe import TrainConfig


def test_mixture_batches_mix_tasks(tmp_path):
    files = write_dataset(tmp_path, n=3, seed=2000)
    cfg = TrainConfig(task="mixture", model="mini", mixture={t: str(p) for t, p in files.items()},
                      data={"patch_image_size": 64, "max_src_length": 40, "max_tgt_length": 40,
                            "ground": {"max_image_size": 64}, "vqa": {"prompt_type": "none"}})
    train, valid = build_datasets(cfg, get_config("mini"))
    n = {t: sum(1 for _ in open(p)) for t, p in files.items()}
    assert valid is None and len(train) == sum(n.values())
    first_vqa, first_ground = n["caption"], n["caption"] + n["vqa"]
    batch = train.collater([train[0], train[first_vqa], train[first_ground]])
    net = batch["net_input"]
    assert net["patch_images"].shape == (3, 3, 64, 64) and net["patch_masks"].all()
    assert batch["target"].shape[0] == 3 and "conf" not in batch
    bin_0 = get_config("mini").bin_0
    ground_target = batch["target"][2]
    assert (ground_target[:4] >= bin_0).all()  # the grounding sample targets four location tokens
    assert not (batch["target"][0] >= bin_0).any()
    assert batch["ntokens"] == int(batch["target"].ne(1).sum())
    assert torch.equal(net["prev_output_tokens"][:, 0], torch.zeros(3, dtype=torch.long))
