"""The procedural scene generator: deterministic, and every text follows from the drawn scene."""

from __future__ import annotations

import json

from openofa.scenes import COLORS, make_scene, write_dataset


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
    for task in ("caption", "vqa"):
        assert full[task].read_text() == small[task].read_text()
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
