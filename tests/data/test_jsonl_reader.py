"""The plain format: a folder of image files plus a JSONL file of records."""

from __future__ import annotations

import shutil

import pytest
import torch
from datafiles import IMAGES, b64, write_jsonl, write_tsv

from openofa.data import build_dataset, collate, find_data_file, load_references, open_records
from openofa.errors import OFAError


@pytest.fixture()
def image_dir(tmp_path):
    d = tmp_path / "coco"
    (d / "images").mkdir(parents=True)
    for name in ("a_200x150_rgb", "b_640x480_rgb"):
        shutil.copy(IMAGES / f"{name}.png", d / "images" / f"{name}.png")
    return d


def test_records_per_task(image_dir):
    d = image_dir
    cap = write_jsonl(d / "caption.jsonl", [
        {"id": "x1", "image": "images/a_200x150_rgb.png", "caption": "A red square."},
        {"image": "images/b_640x480_rgb.png", "captions": ["a circle", "a yellow circle"]},
    ])
    r0, r1 = open_records("caption", cap)
    assert r0.id == "x1" and r0.target == "A red square."
    assert r0.image == str(d / "images" / "a_200x150_rgb.png") and r0.extra["image_is_path"]
    assert r1.id == 1 and r1.target == "a circle&&a yellow circle"  # no id: the row number

    vqa = write_jsonl(d / "vqa.jsonl", [
        {"image": "images/a_200x150_rgb.png", "question": "what colour?", "answers": {"red": 1.0, "orange": 0.4}},
        {"image": "images/a_200x150_rgb.png", "question": "what?", "answers": ["square", "box"],
         "objects": ["square"]},
        {"image": "images/a_200x150_rgb.png", "question": "what?", "answers": "0.9|!+square"},
    ])
    a, b, c = open_records("vqa", vqa)
    assert a.answers == {"red": 1.0, "orange": 0.4} and a.objects is None
    assert b.answers == {"square": 1.0, "box": 1.0} and b.objects == ["square"]
    assert c.answers == {"square": 0.9}

    ground = write_jsonl(d / "ground.jsonl", [
        {"image": "images/a_200x150_rgb.png", "text": "the square", "box": [20, 30, 80, 100]},
        {"image": "images/a_200x150_rgb.png", "text": "the square", "box": "20,30,80,100"},
    ])
    g0, g1 = open_records("ground", ground)
    assert g0.box == g1.box == (20.0, 30.0, 80.0, 100.0)

    ve = write_jsonl(d / "ve.jsonl", [
        {"image": "images/a_200x150_rgb.png", "hypothesis": "shapes", "label": "yes"},
        {"image": "images/a_200x150_rgb.png", "hypothesis": "shapes", "premise": "a square", "label": "neutral"},
    ])
    v0, v1 = open_records("entail", ve)
    assert (v0.label, v0.text2, v1.label, v1.text2) == ("yes", None, "maybe", "a square")

    summ = write_jsonl(d / "sum.jsonl", [{"text": "long article", "summary": "short"}])
    s = open_records("summarize", summ)[0]
    assert (s.text, s.target, s.image) == ("long article", "short", None)

    glue = write_jsonl(d / "mrpc.jsonl", [{"sentence1": "a", "sentence2": "b", "label": 1}])
    assert open_records("mrpc", glue)[0].label == "yes"


def test_folder_with_split_files_and_key_mapping(image_dir):
    d = image_dir
    write_jsonl(d / "train.jsonl", [{"image": "images/a_200x150_rgb.png", "caption": "a square"}])
    write_jsonl(d / "val.jsonl", [{"image": "images/b_640x480_rgb.png", "sentence": "a circle"}])
    assert find_data_file(d, "train") == (d / "train.jsonl", "jsonl")
    assert find_data_file(d, "valid") == (d / "val.jsonl", "jsonl")
    ds = build_dataset("caption", d, split="valid", patch_image_size=32, columns={"caption": "sentence"})
    assert ds[0]["ref"] == ["a circle"]
    with pytest.raises(OFAError, match=r"no test\.jsonl or test\.tsv"):
        build_dataset("caption", d, split="test")
    # images resolved against another folder
    write_jsonl(d / "flat.jsonl", [{"image": "a_200x150_rgb.png", "caption": "a square"}])
    ds = build_dataset("caption", d / "flat.jsonl", image_root=d / "images", patch_image_size=32)
    assert ds[0]["patch_image"].shape == (3, 32, 32)


@pytest.mark.parametrize("split", ["train", "valid"])
def test_jsonl_and_tsv_give_identical_samples(tmp_path, image_dir, split):
    d = image_dir
    jl = write_jsonl(d / "ref.jsonl", [
        {"id": "r1", "image": "images/b_640x480_rgb.png", "text": "Yellow circle in the middle",
         "box": [200.5, 100.25, 440.0, 340.75]},
    ])
    tsv = write_tsv(tmp_path / "ref.tsv", [
        ["r1", 0, "Yellow circle in the middle", "200.5,100.25,440.0,340.75", b64("b_640x480_rgb")],
    ])
    a = collate([build_dataset("refcoco", jl, split=split)[0]])
    b = collate([build_dataset("refcoco", tsv, split=split)[0]])
    for key in ("src_tokens", "prev_output_tokens", "patch_images"):
        assert torch.equal(a["net_input"][key], b["net_input"][key])
    assert torch.equal(a["target"], b["target"]) and a["id"] == b["id"] == ["r1"]
    assert torch.equal(a["w_resize_ratio"], b["w_resize_ratio"])

    vj = write_jsonl(d / "vqa.jsonl", [{"id": "q", "image": "images/a_200x150_rgb.png", "question": "What?",
                                        "answers": {"red": 0.5, "dark red": 1.0}, "objects": ["square", "circle"]}])
    vt = write_tsv(tmp_path / "vqa.tsv", [["q", 0, "What?", "0.5|!+red&&1.0|!+dark red", "square&&circle",
                                           b64("a_200x150_rgb")]])
    sa, sb = build_dataset("vqa", vj, split=split)[0], build_dataset("vqa", vt, split=split)[0]
    for key in ("source", "target", "prev_output_tokens", "prefix", "patch_image"):
        assert torch.equal(sa[key], sb[key])
    assert sa["conf"] == sb["conf"] == 1.0


def test_load_references(image_dir):
    d = image_dir
    f = write_jsonl(d / "val.jsonl", [
        {"id": 1, "image": "images/a_200x150_rgb.png", "captions": ["A red square!", "a  box"]},
        {"id": 2, "image": "images/b_640x480_rgb.png", "caption": "a circle && a ball."},
    ])
    assert load_references("caption", f) == {1: ["A red square", "a box"], 2: ["a circle", "a ball"]}
    g = write_jsonl(d / "g.jsonl", [{"id": "g", "image": "x.png", "text": "t", "box": [1, 2, 3, 4]}])
    assert load_references("ground", g) == {"g": [1.0, 2.0, 3.0, 4.0]}  # images are not opened
    s = write_jsonl(d / "s.jsonl", [{"id": 3, "text": "t", "summary": "An <unk> Summary"}])
    assert load_references("summarize", s) == {3: "an <unk> summary"}
