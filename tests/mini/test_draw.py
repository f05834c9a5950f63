"""The drawing scenes, their captions and the judge of drawings (openofa.mini.draw)."""

from __future__ import annotations

import json

import pytest

from openofa.errors import OFAError
from openofa.mini.draw import (DRAW_SIZE, asked_objects, caption_for, drawing_captions, drawing_scene, judge,
                               write_drawing_dataset)
from openofa.mini.scenes import COLORS
from openofa.vision.transforms import resize_bicubic


def _small(scene):
    return resize_bicubic(scene.image, DRAW_SIZE, DRAW_SIZE)


def test_scenes_are_plain_and_small():
    for seed in range(30):
        scene = drawing_scene(seed)
        assert scene.background == "plain"
        assert 1 <= len(scene.shapes) <= 3
        assert drawing_scene(seed).shapes == scene.shapes  # a pure function of the seed


def test_captions_name_every_object_left_to_right():
    for seed in range(40):
        scene = drawing_scene(seed)
        objs = sorted(scene.shapes, key=lambda s: s.center[0])
        for cap in drawing_captions(scene):
            asked, relation = asked_objects(cap)
            assert sorted(asked) == sorted((o.color, o.kind) for o in objs), cap
            if relation == "left":
                assert asked == [(o.color, o.kind) for o in objs]
            elif relation == "right":
                assert asked == [(o.color, o.kind) for o in reversed(objs)]
        assert caption_for(scene) in drawing_captions(scene)


def test_caption_forms_are_all_used():
    caps = [caption_for(drawing_scene(s)) for s in range(300)]
    assert any(" left of " in c for c in caps) and any(" right of " in c for c in caps)
    assert any(" small " in c or " large " in c for c in caps)
    assert any(" and " in c and " small " not in c and " large " not in c for c in caps)


def test_asked_objects_of_free_text():
    assert asked_objects("a red circle left of a blue square") == ([("red", "circle"), ("blue", "square")], "left")
    assert asked_objects("A small green star") == ([("green", "star")], None)
    assert asked_objects("a dog") == ([], None)
    with pytest.raises(OFAError, match="no object"):
        judge(_small(drawing_scene(0)), "a dog")


def test_judge_finds_drawn_colours_and_misses_absent_ones():
    found = asked = 0
    for seed in range(40):
        scene = drawing_scene(seed)
        image = _small(scene)
        cap = caption_for(scene)
        v = judge(image, cap)
        found, asked = found + sum(v.colour), asked + len(v.asked)
        if v.relation is not None:
            assert v.relation, cap  # the scene itself satisfies its caption
        absent = next(c for c in COLORS if c not in {s.color for s in scene.shapes})
        assert judge(image, f"a {absent} circle").colour == [False]
    assert found == asked


def test_judge_reads_a_wrong_relation():
    for seed in range(200):
        scene = drawing_scene(seed)
        caps = drawing_captions(scene)
        if len(caps) == 4 and len({s.color for s in scene.shapes}) == 2:
            left, right = caps[2], caps[3]
            image = _small(scene)
            assert judge(image, left).relation is True
            swapped = left.replace(" left of ", " right of ")
            assert judge(image, swapped).relation is False
            assert judge(image, right).relation is True
            return
    pytest.fail("no two-object scene of two colours in 200 seeds")


def test_dataset_rows(tmp_path):
    path = write_drawing_dataset(tmp_path / "d", 5, seed=3)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [3, 4, 5, 6, 7]
    from PIL import Image

    for r in rows:
        assert r["text"] == caption_for(drawing_scene(r["id"]))
        with Image.open(path.parent / r["image"]) as im:
            assert im.size == (DRAW_SIZE, DRAW_SIZE)
    with pytest.raises(OFAError, match="n must be"):
        write_drawing_dataset(tmp_path / "e", 0)


def test_scenes_command_writes_drawing_scenes(tmp_path, capsys):
    from openofa.cli import main

    assert main(["scenes", str(tmp_path / "d"), "--draw", "--n", "3", "--seed", "9"]) == 0
    path = tmp_path / "d" / "draw.jsonl"
    assert capsys.readouterr().out.strip() == str(path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["text"] for r in rows] == [caption_for(drawing_scene(s)) for s in (9, 10, 11)]
