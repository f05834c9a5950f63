"""Pretraining the image trunk alone on detection rows (recipe ``task: trunk``)."""

from __future__ import annotations

import json

import pytest
import torch

from openofa.errors import OFAError
from openofa.mini.scenes import make_scene, write_dataset
from openofa.mini.trunk import BOX_UNIT, STRIDE, TrunkTargets, _iou


def _write_detection(tmp_path, objects, size=64):
    from PIL import Image

    Image.new("RGB", (size, size), (200, 200, 200)).save(tmp_path / "img.png")
    path = tmp_path / "det.jsonl"
    path.write_text(json.dumps({"id": 0, "image": "img.png", "objects": objects}) + "\n")
    return path


def test_targets_put_each_object_in_the_cell_of_its_centre(tmp_path):
    files = write_dataset(tmp_path, n=4, seed=11, image_size=128)
    data = TrunkTargets(files["detection"], 128)
    names = [s.phrase(with_size=True) for seed in range(11, 15) for s in make_scene(seed).shapes]
    assert data.words == sorted({w for name in names for w in name.split()})
    for index, seed in enumerate(range(11, 15)):
        scene = make_scene(seed)
        image, obj, words, boxes = data[index]
        assert image.shape == (3, 128, 128)
        centres = {}
        for s in sorted(scene.shapes, key=lambda o: -(o.box[2] - o.box[0])):  # smaller boxes win a shared cell
            box = [v / 2 for v in s.box]  # 256-pixel scene stored at 128
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            centres[(int(cy // STRIDE), int(cx // STRIDE))] = (box, s.phrase(with_size=True))
        assert {tuple(ij) for ij in obj.nonzero().tolist()} == set(centres)
        for (i, j), (box, name) in centres.items():
            assert {data.words[k] for k in words[i, j].nonzero().flatten().tolist()} == set(name.split())
            ccx, ccy = (j + 0.5) * STRIDE, (i + 0.5) * STRIDE
            back = [ccx - boxes[i, j, 0] * BOX_UNIT, ccy - boxes[i, j, 1] * BOX_UNIT,
                    ccx + boxes[i, j, 2] * BOX_UNIT, ccy + boxes[i, j, 3] * BOX_UNIT]
            assert max(abs(float(a) - b) for a, b in zip(back, box)) < 0.01  # the file rounds to 0.01


def test_the_smaller_box_owns_a_shared_cell_and_boxes_scale_with_the_image(tmp_path):
    # a 64-pixel image read at 32: both centres land in cell (0, 0)
    path = _write_detection(tmp_path, [[0, 0, 30, 30, 1, "big thing"], [4, 4, 16, 16, 2, "small thing"]])
    data = TrunkTargets(path, 32)
    _, obj, words, boxes = data[0]
    assert obj.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert {data.words[k] for k in words[0, 0].nonzero().flatten().tolist()} == {"small", "thing"}
    assert torch.allclose(boxes[0, 0] * BOX_UNIT, torch.tensor([8 - 2.0, 8 - 2.0, 8 - 8.0, 8 - 8.0]))


def test_box_cells_cover_the_object_and_the_smaller_box_keeps_its_cells(tmp_path):
    # 64 px, 4x4 grid of 16-px cells (centres 8, 24, 40, 56): the big box covers cell centres
    # x, y in {8, 24, 40}; the small one (centre 28, 28) owns cell (1, 1) and the cell of its centre
    from openofa.mini.trunk import box_bins

    objects = [[2.0, 2.0, 46.0, 46.0, 0, "large red square"], [20.0, 20.0, 36.0, 36.0, 1, "small blue star"]]
    path = _write_detection(tmp_path, objects)
    _, obj_c, _, _ = TrunkTargets(path, 64)[0]
    assert obj_c.nonzero().tolist() == [[1, 1]]  # "centre": both centres fall in (1, 1), the small box wins
    data = TrunkTargets(path, 64, cells="box")
    _, obj, words, boxes = data[0]
    assert sorted(map(tuple, obj.nonzero().tolist())) == [(i, j) for i in range(3) for j in range(3)]
    bins = box_bins(boxes, 64, 64)
    for i in range(3):
        for j in range(3):
            small = (i, j) == (1, 1)
            name = {data.words[k] for k in words[i, j].nonzero().flatten().tolist()}
            assert name == set(objects[small][5].split())
            want = [round(v / 64 * 63) for v in objects[small][:4]]
            assert bins[i, j].tolist() == want
    with pytest.raises(OFAError, match="trunk_cells"):
        TrunkTargets(path, 64, cells="all")


def test_iou_of_distance_boxes():
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert _iou(a, b).tolist() == pytest.approx([1.0, 0.25])


@pytest.mark.parametrize("objects, message", [
    ([[10, 10, 5, 20, 1, "thing"]], "empty, inverted or not finite"),
    ([[10, 10, 20]], "expected x1,y1,x2,y2,id,name"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, objects, message):
    path = _write_detection(tmp_path, objects)
    with pytest.raises(OFAError, match=message) as err:
        TrunkTargets(path, 32)[0]
    assert f"{path}:1" in str(err.value) and "\n" not in str(err.value)


def test_size_must_fit_the_grid(tmp_path):
    path = _write_detection(tmp_path, [[0, 0, 30, 30, 1, "thing"]])
    with pytest.raises(OFAError, match="multiple of 16"):
        TrunkTargets(path, 40)


def test_trunk_stage_trains_only_the_trunk_and_the_next_stage_starts_from_it(tmp_path):
    """A recipe: trunk stage, then a caption stage with the trunk frozen. The trunk stage's
    weights differ from the seeded model only in the trunk, its loss falls, and the caption
    stage's trunk is exactly the trunk stage's."""
    from openofa.checkpoints import load_checkpoint
    from openofa.config import get_config
    from openofa.model import build_model
    from openofa.train import cli

    files = write_dataset(tmp_path / "scenes", n=24, seed=100, image_size=64)
    recipe = {
        "model": "mini", "data": {"patch_image_size": 64, "max_src_length": 20, "max_tgt_length": 30},
        "batch_size": 8, "lr": 2e-3, "seed": 3, "log_every": 5, "precision": "fp32", "run_dir": str(tmp_path / "run"),
        "validate_every_epochs": 0, "save_every_epochs": 0, "progress": False,
        "stages": [
            {"name": "trunk", "task": "trunk", "train_data": str(files["detection"]), "max_update": 15},
            {"name": "captions", "task": "caption", "train_data": str(files["caption"]), "freeze_resnet": True,
             "max_update": 2, "max_epoch": 1},
        ],
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    assert cli.main([str(path)]) == 0
    _, trunk_sd, _ = load_checkpoint(tmp_path / "run" / "trunk" / "final")
    _, cap_sd, _ = load_checkpoint(tmp_path / "run" / "captions" / "final")
    torch.manual_seed(3)
    import dataclasses

    fresh = build_model(dataclasses.replace(get_config("mini"), patch_image_size=64)).state_dict()
    prefix = "encoder.embed_images."
    trunk_keys = [k for k in fresh if k.startswith(prefix) and fresh[k].is_floating_point()]
    assert any(not trunk_sd[k].equal(fresh[k]) for k in trunk_keys)
    assert all(trunk_sd[k].equal(fresh[k]) for k in fresh if not k.startswith(prefix) and k in trunk_sd)
    assert all(cap_sd[k].equal(trunk_sd[k]) for k in trunk_keys)
    assert any(not cap_sd[k].equal(trunk_sd[k]) for k in trunk_sd if not k.startswith(prefix))


def test_trunk_loss_falls(tmp_path):
    """A few updates on the same 16 scenes lower the dense loss (the head and trunk learn)."""
    from openofa.train.recipe import config_from_mapping
    from openofa.mini.trunk import pretrain_trunk

    files = write_dataset(tmp_path / "scenes", n=16, seed=300, image_size=64)
    cfg = config_from_mapping({"task": "trunk", "model": "mini", "train_data": str(files["detection"]),
                               "data": {"patch_image_size": 64}, "batch_size": 16, "lr": 3e-3, "max_update": 40,
                               "log_every": 10, "seed": 0, "run_dir": str(tmp_path / "run")})
    out = pretrain_trunk(cfg)
    assert out["num_updates"] == 40
    first, last = out["log"][0]["loss"], out["log"][-1]["loss"]
    assert last < 0.7 * first
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_loader_workers_do_not_change_the_trained_trunk(tmp_path):
    """Three epochs with and without a (persistent) loader worker: the same order of samples, so
    the very same weights; the loader's per-epoch worker seeds must not move the sampler."""
    from openofa.checkpoints import load_checkpoint
    from openofa.train.recipe import config_from_mapping
    from openofa.mini.trunk import pretrain_trunk

    files = write_dataset(tmp_path / "scenes", n=12, seed=300, image_size=64)
    weights = []
    for workers in (0, 1):
        run = tmp_path / f"run{workers}"
        cfg = config_from_mapping({"task": "trunk", "model": "mini", "train_data": str(files["detection"]),
                                   "data": {"patch_image_size": 64}, "batch_size": 4, "lr": 3e-3, "max_update": 9,
                                   "log_every": 100, "seed": 5, "num_workers": workers, "run_dir": str(run)})
        assert pretrain_trunk(cfg)["num_updates"] == 9
        weights.append(load_checkpoint(run / "final")[1])
    trunk = [k for k in weights[0] if k.startswith("encoder.embed_images.") and weights[0][k].is_floating_point()]
    assert trunk and all(weights[0][k].equal(weights[1][k]) for k in trunk)


def test_box_bins_quantize_like_the_grounding_targets(tmp_path):
    from openofa.text.locations import quantize_box
    from openofa.mini.trunk import box_bins

    objects = [[3.0, 5.0, 40.0, 30.0, 0, "large red circle"], [50.0, 44.0, 62.5, 63.0, 1, "small blue star"]]
    ds = TrunkTargets(_write_detection(tmp_path, objects), 64)
    _, obj, _, boxes = ds[0]
    bins = box_bins(boxes, 64, 32)
    cells = obj.nonzero().tolist()
    assert len(cells) == 2
    for o in objects:
        i, j = int((o[1] + o[3]) / 2 // STRIDE), int((o[0] + o[2]) / 2 // STRIDE)
        assert [i, j] in cells
        assert bins[i, j].tolist() == quantize_box(o[:4], num_bins=32, max_image_size=64)


def test_embedding_head_trains_the_patch_and_token_embeddings(tmp_path):
    """trunk_head: embedding: the loss falls, and besides the trunk the patch embedding path and
    the rows of the name words and location tokens change; the transformer layers and the other
    token rows stay as initialised."""
    from openofa.checkpoints import load_checkpoint
    from openofa.train.recipe import config_from_mapping
    from openofa.mini.trunk import pretrain_trunk

    files = write_dataset(tmp_path / "scenes", n=16, seed=300, image_size=64)
    run = tmp_path / "run"
    cfg = config_from_mapping({"task": "trunk", "model": "mini", "train_data": str(files["detection"]),
                               "data": {"patch_image_size": 64, "trunk_head": "embedding"}, "batch_size": 16,
                               "lr": 3e-3, "weight_decay": 0.0, "max_update": 40, "log_every": 10, "seed": 0,
                               "run_dir": str(run), "precision": "fp32"})
    out = pretrain_trunk(cfg)
    assert out["log"][-1]["loss"] < 0.7 * out["log"][0]["loss"]
    from openofa.train.model import build_model_for

    torch.manual_seed(0)  # the stage's seed: the weights it started from
    sd0 = build_model_for(cfg).state_dict()
    config, sd, _ = load_checkpoint(run / "final")
    changed = {k for k in sd if not torch.equal(sd[k], sd0[k])}
    assert "encoder.image_proj.weight" in changed and "encoder.embed_image_positions.weight" in changed
    assert any(k.startswith("encoder.embed_images.") for k in changed)
    assert not any(k.startswith(("encoder.layers.", "decoder.layers.")) for k in changed)
    from openofa.text.tokenizer import OFATokenizer

    tok = OFATokenizer.for_config(config)
    rows = (sd["encoder.embed_tokens.weight"] != sd0["encoder.embed_tokens.weight"]).any(1).nonzero().view(-1)
    words = {tok.encode(" " + w)[0] for w in TrunkTargets(files["detection"], 64).words}
    assert {r for r in rows.tolist() if r < config.bin_0} == words  # the name words' rows, no others
    assert int((rows >= config.bin_0).sum()) > 0
    with pytest.raises(OFAError, match="trunk_head"):
        pretrain_trunk(config_from_mapping({**cfg.__dict__, "data": {"patch_image_size": 64, "trunk_head": "x"}}))
