"""Reading the original's TSV layouts: default column selections per task, overrides, base64
flavours, the pretraining files."""

from __future__ import annotations

import pytest
import torch
from datafiles import b64, b64_with_url_chars, write_tsv

from openofa.data import build_dataset, open_records, resolve_columns
from openofa.errors import OFAError


def test_default_selected_columns_match_the_original_scripts():
    assert resolve_columns("caption") == {"id": 0, "image": 4, "caption": 2}
    assert resolve_columns("vqa") == {"id": 0, "image": 5, "question": 2, "answers": 3, "objects": 4}
    assert resolve_columns("refcoco") == {"id": 0, "image": 4, "text": 2, "box": 3}
    assert resolve_columns("snli_ve") == {"id": 0, "image": 2, "hypothesis": 3, "premise": 4, "label": 5}
    assert resolve_columns("image_classify") == {"image": 0, "label": 2}
    assert resolve_columns("gigaword") == {"text": 0, "summary": 1}
    assert resolve_columns("qnli") == {"question": 1, "sentence": 2, "label": 3}
    assert resolve_columns("qqp") == {"question1": 3, "question2": 4, "label": 5}
    assert resolve_columns("cola") == {"sentence": 1, "label": 2}


def test_column_overrides_positional_and_by_name():
    # the original's --selected-cols string, in the task's field order (stage-2 caption: image-id as id)
    assert resolve_columns("caption", "1,4,2") == {"id": 1, "image": 4, "caption": 2}
    assert resolve_columns("caption", [1, 4, 2]) == {"id": 1, "image": 4, "caption": 2}
    assert resolve_columns("vqa", "0,5,2,3") == {"id": 0, "image": 5, "question": 2, "answers": 3}
    assert resolve_columns("caption", "image=3") == {"id": 0, "image": 3, "caption": 2}
    assert resolve_columns("caption", {"caption": 1}) == {"id": 0, "image": 4, "caption": 1}
    with pytest.raises(OFAError, match="no field 'question'"):
        resolve_columns("caption", {"question": 1})
    with pytest.raises(OFAError, match="selects 3 columns"):
        resolve_columns("caption", "0,4")
    with pytest.raises(OFAError, match="bad column selection"):
        resolve_columns("caption", "0,x,2")


def test_caption_rows_and_column_override(tmp_path):
    f = write_tsv(tmp_path / "cap.tsv", [
        [7, 70, "a red square", "square&&circle", b64("a_200x150_rgb")],
        [8, 80, "a circle&&another caption", "", b64("b_640x480_rgb")],
    ])
    recs = list(open_records("caption", f))
    assert [r.id for r in recs] == ["7", "8"]
    assert recs[1].target == "a circle&&another caption"
    assert recs[0].where == f"{f}:1" and recs[1].where == f"{f}:2"
    by_image_id = open_records("caption", f, columns="1,4,2")
    assert [r.id for r in by_image_id] == ["70", "80"]


def test_standard_and_urlsafe_base64_give_the_same_image(tmp_path):
    f = write_tsv(tmp_path / "cap.tsv", [
        [1, 0, "x", "", b64("b_640x480_rgb")],
        [2, 0, "x", "", b64_with_url_chars("b_640x480_rgb")],
    ])
    ds = build_dataset("caption", f, patch_image_size=32)
    a, b = ds[0]["patch_image"], ds[1]["patch_image"]
    assert a.shape == (3, 32, 32) and torch.equal(a, b)


def test_vqa_answers_objects_and_optional_caption_column(tmp_path):
    f = write_tsv(tmp_path / "vqa.tsv", [
        [1, 11, "What is it?", "0.3|!+cat&&1.0|!+dog&&0.6|!+puppy", "dog&&sofa", b64("a_200x150_rgb"), "a dog"],
        [2, 12, "Why", "1.0|!+because", "", b64("a_200x150_rgb")],
    ])
    r0, r1 = open_records("vqa", f)
    assert r0.answers == {"cat": 0.3, "dog": 1.0, "puppy": 0.6}
    assert r0.objects == ["dog", "sofa"] and r0.text == "What is it?"
    assert r1.objects == [""]  # an empty cell, as the original reads it
    no_objects = open_records("vqa", f, columns="0,5,2,3")[0]
    assert no_objects.objects is None


def test_grounding_entailment_classification_glue_summary(tmp_path):
    ref = write_tsv(tmp_path / "ref.tsv", [[5, 50, "the red square", "20,30,80,100", b64("a_200x150_rgb")]])
    assert open_records("refcoco", ref)[0].box == (20.0, 30.0, 80.0, 100.0)

    ve = write_tsv(tmp_path / "ve.tsv", [
        [1, 10, b64("a_200x150_rgb"), "two shapes", "a square and a circle", "entailment"],
        [2, 10, b64("a_200x150_rgb"), "a dog", "a square", "contradiction"],
        [3, 10, b64("a_200x150_rgb"), "shapes", "a square", "neutral"],
    ])
    recs = list(open_records("snli_ve", ve))
    assert [r.label for r in recs] == ["yes", "no", "maybe"]
    assert recs[0].text == "two shapes" and recs[0].text2 == "a square and a circle"

    img = write_tsv(tmp_path / "imagenet.tsv", [[b64("a_200x150_rgb"), 1, "tench, Tinca tinca"]])
    rec = open_records("classify", img)[0]
    assert rec.label == "tench, Tinca tinca" and rec.id == 0

    mnli = write_tsv(tmp_path / "mnli.tsv", [["a man sleeps", "a person rests", 0], ["x", "y", 1], ["x", "y", 2]])
    assert [r.label for r in open_records("mnli", mnli)] == ["maybe", "yes", "no"]
    qnli = write_tsv(tmp_path / "qnli.tsv", [[0, "what is red?", "the square is red.", "entailment"]])
    q = open_records("qnli", qnli)[0]
    assert (q.text, q.text2, q.label) == ("the square is red.", "what is red?", "yes")
    sst = write_tsv(tmp_path / "sst2.tsv", [["great movie", 1], ["bad", 0]])
    assert [r.label for r in open_records("sst2", sst)] == ["positive", "negative"]
    rte = write_tsv(tmp_path / "rte.tsv", [[0, "a", "b", "not_entailment"]])
    assert open_records("rte", rte)[0].label == "no"

    giga = write_tsv(tmp_path / "giga.tsv", [["the article text", "the summary"]])
    g = open_records("gigaword", giga)[0]
    assert (g.text, g.target) == ("the article text", "the summary")


def test_pretraining_files(tmp_path):
    img = b64("a_200x150_rgb")
    vl = write_tsv(tmp_path / "vision_language_examples.tsv", [
        [1, img, "a red square", "", "", "square", "coco", "caption"],
        [2, img, "", "what colour?", "1.0|!+red&&0.5|!+orange", "", "vqa", "qa"],
        [3, img, "the square", "", "20,30,80,100", "", "refcoco", "visual_grounding"],
    ])
    cap, qa, vg = open_records("vision_language", vl)
    assert cap.extra["type"] == "caption" and cap.text == "a red square" and cap.objects == ["square"]
    assert qa.answers == {"red": 1.0, "orange": 0.5} and qa.text2 == "what colour?"
    assert vg.box == (20.0, 30.0, 80.0, 100.0) and vg.extra["dataset"] == "refcoco"

    text = write_tsv(tmp_path / "text_examples.tsv", [[1, "some plain text"]])
    assert open_records("text", text)[0].text == "some plain text"

    codes = write_tsv(tmp_path / "image_examples.tsv", [[9, img, "1 2 3 8191"]])
    assert open_records("image", codes)[0].extra["code"] == [1, 2, 3, 8191]

    det = write_tsv(tmp_path / "detection_examples.tsv", [[4, img, "1,2,30,40,3,dog&&5,5,9,9,1,person, tall"]])
    d = open_records("detection", det)[0]
    assert d.extra["boxes"] == [(1.0, 2.0, 30.0, 40.0), (5.0, 5.0, 9.0, 9.0)]
    assert d.objects == ["dog", "person, tall"] and d.extra["category_ids"] == ["3", "1"]

    # the pretraining files have sample builders too (tests/data/test_pretrain_samples.py)
    sample = build_dataset("detection", det, patch_image_size=32)[0]
    assert sample["patch_image"].shape == (3, 32, 32) and sample["conf"] == 2.0


def test_blank_lines_and_crlf_keep_line_numbers(tmp_path):
    f = tmp_path / "giga.tsv"
    f.write_bytes(b"first text\tfirst summary\r\n\r\n\nsecond text\tsecond summary\r\nthird\tlast")
    recs = list(open_records("gigaword", f))
    assert [r.text for r in recs] == ["first text", "second text", "third"]
    assert [r.target for r in recs] == ["first summary", "second summary", "last"]
    assert [r.where.rsplit(":", 1)[1] for r in recs] == ["1", "4", "5"]


def test_unknown_task_and_missing_file(tmp_path):
    with pytest.raises(OFAError, match="unknown task"):
        open_records("nope", tmp_path)
    with pytest.raises(OFAError, match="not found"):
        open_records("caption", tmp_path / "missing.tsv")
