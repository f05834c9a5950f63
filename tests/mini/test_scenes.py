"""The procedural scene generator: deterministic, and every text follows from the drawn scene."""

from __future__ import annotations

import json

import pytest

from openofa.mini.scenes import COLORS, make_scene, write_dataset


def test_same_seed_same_scene_different_seed_different_scene():
    a, b, c = make_scene(11), make_scene(11), make_scene(12)
    assert a.image.tobytes() == b.image.tobytes() and a.caption() == b.caption()
    assert a.questions() == b.questions() and a.referring_expressions() == b.referring_expressions()
    assert a.image.tobytes() != c.image.tobytes()


def test_texts_agree_with_the_objects():
    for seed in range(200):
        scene = make_scene(seed)
        w, h = scene.image.size
        for s in scene.shapes:
            x1, y1, x2, y2 = s.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            # the object's colour is really drawn at its centre unless a later shape covers it
            if s.kind in ("circle", "square", "diamond", "cross"):
                covered = any(o is not s and o.size == "small" and o.box[0] <= s.center[0] <= o.box[2]
                              and o.box[1] <= s.center[1] <= o.box[3] for o in scene.shapes)
                if not covered:
                    assert scene.image.getpixel(tuple(int(v) for v in s.center)) == COLORS[s.color]
        for q, a in scene.questions():
            if q == "how many objects are there?":
                assert a == ["zero", "one", "two", "three", "four", "five", "six"][len(scene.shapes)]
            if q.startswith("is there a "):
                color, kind = q[len("is there a "):-1].split()
                assert (a == "yes") == any(s.color == color and s.kind == kind for s in scene.shapes)
        for text, box in scene.referring_expressions():
            assert sum(s.box == box for s in scene.shapes) >= 1
            assert any(s.box == box and s.kind in text for s in scene.shapes)
        assert scene.caption().count(" and ") <= 1


def test_questions_name_the_object_they_are_about():
    kinds = {"subject": 0, "none": 0}
    for seed in range(100):
        scene = make_scene(seed)
        triples = scene.questions_with_subjects()
        assert [(q, a) for q, a, _ in triples] == scene.questions()
        for q, a, s in triples:
            kinds["none" if s is None else "subject"] += 1
            if q.startswith("what color is the "):
                assert s.kind == q.split()[-1][:-1] and a == s.color
            elif q.startswith("what shape is the "):
                assert s.color == q.split()[-2] and a == s.kind
            elif q.startswith("is there a "):
                color, kind = q[len("is there a "):-1].split()
                matches = [o for o in scene.shapes if o.color == color and o.kind == kind]
                assert s is (matches[0] if len(matches) == 1 else None)
            elif q.startswith("how many"):
                assert s is None
    assert kinds["subject"] > 0 and kinds["none"] > 0


def test_vqa_boxes_reach_the_batch_in_input_pixels(tmp_path):
    from openofa.data.dataset import build_dataset

    files = write_dataset(tmp_path, n=4, seed=5)
    rows = [json.loads(line) for line in files["vqa"].read_text().splitlines()]
    with_box = [i for i, r in enumerate(rows) if "box" in r]
    assert with_box and len(with_box) < len(rows)
    ds = build_dataset("vqa", files["vqa"], patch_image_size=64, shard=None)
    sample = ds[with_box[0]]
    scale = 64 / 256  # scenes are drawn at 256 pixels
    assert sample["attend_box"].tolist() == pytest.approx([v * scale for v in rows[with_box[0]]["box"]])
    plain = next(i for i in range(len(rows)) if i not in with_box)
    batch = ds.collater([ds[with_box[0]], ds[plain]])
    assert batch["attend_boxes"][0].tolist() == sample["attend_box"].tolist()
    assert bool(batch["attend_boxes"][1].isnan().all())


def test_write_dataset_layout(tmp_path):
    files = write_dataset(tmp_path, n=5, seed=3)
    caps = [json.loads(line) for line in files["caption"].read_text().splitlines()]
    assert [c["id"] for c in caps] == [3, 4, 5, 6, 7]
    assert all((tmp_path / c["image"]).is_file() for c in caps)
    vqa = [json.loads(line) for line in files["vqa"].read_text().splitlines()]
    assert vqa and all(len(r["answers"]) == 1 for r in vqa)
    ground = [json.loads(line) for line in files["ground"].read_text().splitlines()]
    assert ground and all(len(r["box"]) == 4 for r in ground)
    assert caps[0]["caption"] == make_scene(3).caption()
    det = [json.loads(line) for line in files["detection"].read_text().splitlines()]
    assert [d["image"] for d in det] == [c["image"] for c in caps]
    for d, seed in zip(det, range(3, 8)):
        shapes = make_scene(seed).shapes
        assert [o[5] for o in d["objects"]] == [s.phrase(with_size=True) for s in shapes]
        assert [o[:4] for o in d["objects"]] == [list(s.box) for s in shapes]


def test_stored_at_input_size_gives_the_pixels_and_boxes_of_the_full_size_file(tmp_path):
    """``image_size`` shrinks the stored images with the tasks' own resize, so a model reading
    128x128 inputs gets the same tensor from either file, and the same box up to rounding."""
    from PIL import Image

    from openofa.vision.transforms import patch_resize_transform, refcoco_transform

    full = write_dataset(tmp_path / "full", n=3, seed=40)
    small = write_dataset(tmp_path / "small", n=3, seed=40, image_size=128)
    assert full["caption"].read_text() == small["caption"].read_text()
    vqa_full = [json.loads(line) for line in full["vqa"].read_text().splitlines()]
    vqa_small = [json.loads(line) for line in small["vqa"].read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "box"} for r in vqa_full] == \
        [{k: v for k, v in r.items() if k != "box"} for r in vqa_small]
    assert all(abs(x / 2 - y) < 0.01 for a, b in zip(vqa_full, vqa_small) if "box" in a for x, y in zip(a["box"], b["box"]))
    for a, b in zip(full["detection"].read_text().splitlines(), small["detection"].read_text().splitlines()):
        objs_a, objs_b = json.loads(a)["objects"], json.loads(b)["objects"]
        assert [o[4:] for o in objs_a] == [o[4:] for o in objs_b]
        assert all(abs(x / 2 - y) < 0.01 for oa, ob in zip(objs_a, objs_b) for x, y in zip(oa[:4], ob[:4]))
    rows_full = [json.loads(line) for line in full["ground"].read_text().splitlines()]
    rows_small = [json.loads(line) for line in small["ground"].read_text().splitlines()]
    assert [r["text"] for r in rows_full] == [r["text"] for r in rows_small]
    for a, b in zip(rows_full, rows_small):
        img_a = Image.open(tmp_path / "full" / a["image"])
        img_b = Image.open(tmp_path / "small" / b["image"])
        assert img_a.size == (256, 256) and img_b.size == (128, 128)
        assert patch_resize_transform(img_a, 128).equal(patch_resize_transform(img_b, 128))
        ra = refcoco_transform(img_a, a["box"], size=128, max_size=128)
        rb = refcoco_transform(img_b, b["box"], size=128, max_size=128)
        assert ra.patch_image.equal(rb.patch_image)
        assert max(abs(x - y) for x, y in zip(ra.box, rb.box)) < 0.01
