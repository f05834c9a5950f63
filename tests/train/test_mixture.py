"""Multi-task training data: several task files mixed into one dataset and collated together."""

from __future__ import annotations

import torch

from openofa.config import get_config
from openofa.mini.scenes import write_dataset
from openofa.train.datasets import build_datasets
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


def test_pretraining_mixture_trains(tmp_path):
    """The four pretraining files in one run (one image size for all, so that batches mix)."""
    import base64
    import io

    from PIL import Image

    from openofa.train.run import run

    def png(size, color):
        buf = io.BytesIO()
        Image.new("RGB", size, color).save(buf, "PNG")
        return base64.b64encode(buf.getvalue()).decode()

    def write_tsv(path, rows):
        path.write_text("".join("\t".join(str(c) for c in row) + "\n" for row in rows))
        return path

    square, img = png((256, 256), (20, 120, 200)), png((200, 150), (200, 30, 30))
    files = {
        "pretrain_vl": write_tsv(tmp_path / "vision_language_examples.tsv", [
            [1, img, "a red square", "", "", "square", "coco", "caption"],
            [2, img, "", "what colour is it", "1.0|!+red", "", "vqa", "qa"],
            [3, img, "the square", "", "20,30,80,100", "", "refcoco", "visual_grounding"]]),
        "pretrain_text": write_tsv(tmp_path / "text_examples.tsv", [[1, "some plain text to fill in again"]]),
        "pretrain_image": write_tsv(tmp_path / "image_examples.tsv", [[1, square, " ".join(["7"] * 16)]]),
        "pretrain_detection": write_tsv(tmp_path / "detection_examples.tsv", [[1, img, "10,10,90,90,1,square"]]),
    }
    # the pretraining files need image codes and 1000 bins: the mini size with the full vocabulary
    full_vocab = {"text_vocab": None, "num_bins": 1000, "code_dict_size": 8192, "vocab_size": 59457}
    # with the pretraining recipes' kind of ratios (one row of each other file per 3 pair rows here)
    cfg = TrainConfig(task="mixture", model="mini", mixture={t: str(p) for t, p in files.items()},
                      mixture_ratio={"pretrain_text": 0.3, "pretrain_image": 0.3, "pretrain_detection": 0.3},
                      model_config={"encoder_layers": 1, "decoder_layers": 1, **full_vocab},
                      data={"patch_image_size": 64},
                      batch_size=3, max_update=2, lr=1e-4, label_smoothing=0.0, run_dir=str(tmp_path / "run"),
                      progress=False, tensorboard=False, validate_every_epochs=0, save_every_epochs=0, log_every=1,
                      device="cpu").validate("test")
    train, _ = build_datasets(cfg, get_config("mini", **full_vocab))
    batch = train.collater([train[i] for i in range(len(train))])
    assert batch["nsentences"] == 7  # the grounding row also gives its grounded-captioning sample
    assert batch["net_input"]["code_masks"].sum() == 1 and batch["net_input"]["patch_masks"].sum() == 6
    # pretraining files only: the original's per-sample weights stay (2 for text, image, detection)
    assert sorted(batch["conf"].tolist()) == [1.0] * 4 + [2.0] * 3
    summary = run(cfg)
    assert summary["num_updates"] == 2 and summary["last"]["loss"] > 0


def test_mixture_ratio_reads_a_share_of_a_file_per_epoch(tmp_path):
    """The first file sets the epoch; a ratio'd file gives round(ratio x its rows) examples per epoch
    and goes on through its rows from one epoch to the next."""
    files = write_dataset(tmp_path, n=8, seed=2000)
    mixture = {"caption": str(files["caption"]), "vqa": str(files["vqa"])}
    data = {"patch_image_size": 64, "max_src_length": 40, "max_tgt_length": 40, "vqa": {"prompt_type": "none"}}
    cfg = TrainConfig(task="mixture", model="mini", mixture=mixture, mixture_ratio={"vqa": 0.25}, data=data)
    train, _ = build_datasets(cfg, get_config("mini"))
    full, _ = build_datasets(TrainConfig(task="mixture", model="mini", mixture=mixture, data=data), get_config("mini"))
    n_cap = sum(1 for _ in open(files["caption"]))
    n_vqa = sum(1 for _ in open(files["vqa"]))
    share = round(0.25 * n_cap)
    assert len(train) == n_cap + share
    seen = []
    for epoch in (1, 2, 3):
        train.set_epoch(epoch)
        seen += [train[n_cap + j]["where"] for j in range(share)]
    assert seen == [full[n_cap + (k % n_vqa)]["where"] for k in range(3 * share)]
    train.set_epoch(1)
    assert train[n_cap]["where"] == full[n_cap]["where"] and train[0]["where"] == full[0]["where"]


def test_stages_share_decoded_images_and_train_as_without_them(tmp_path, capsys):
    """``image_cache_mb``: the trunk stage decodes each scene once, the mixture stage after it
    reads every image (three tasks over the same scenes) from memory; the losses are those of a
    run without the cache."""
    import json

    from openofa.train.cli import main

    files = write_dataset(tmp_path / "data", n=4, seed=2000)
    n_images = 4
    logs = {}
    for name, mb in (("plain", 0), ("cached", 64)):
        recipe = {"model": "mini", "batch_size": 4, "lr": 1e-3, "seed": 1, "num_workers": 0,
                  "run_dir": str(tmp_path / name), "progress": False, "validate_every_epochs": 0,
                  "log_every": 1, "image_cache_mb": mb, "model_config": {"dropout": 0.0},
                  "data": {"patch_image_size": 64, "max_src_length": 40, "max_tgt_length": 40},
                  "stages": [
                      {"name": "trunk", "task": "trunk", "train_data": str(files["detection"]),
                       "max_update": 2},
                      {"name": "mix", "task": "mixture", "freeze_resnet": True, "max_update": 3,
                       "mixture": {t: str(files[t]) for t in ("caption", "vqa", "ground")},
                       "data": {"ground": {"max_image_size": 64}}}]}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(recipe))
        assert main([str(path)]) == 0
        logs[name] = capsys.readouterr().err
        csv = (tmp_path / name / "mix" / "train_log.csv").read_text().splitlines()
        logs[name + "_losses"] = [line.split(",")[2] for line in csv[1:]]
    assert "image cache" not in logs["plain"]
    # counts are for the whole recipe: the trunk stage (two updates of four scenes) decoded each
    # scene once and read it again once; the mixture stage (three updates of four samples of
    # the three tasks over the same scenes) decoded nothing
    hits = 4 + 3 * 4
    assert f"image cache: {hits} hits, {n_images} misses, {n_images} images" in logs["cached"]
    assert logs["cached_losses"] == logs["plain_losses"] and len(logs["plain_losses"]) == 3
