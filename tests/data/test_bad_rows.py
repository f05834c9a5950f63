"""Bad rows: the first one raises with file and line, or every one is skipped and counted."""

from __future__ import annotations

import base64
import logging
import shutil

import pytest
import torch
from datafiles import IMAGES, b64, write_jsonl, write_tsv

from openofa.data import BadRow, Skipped, build_dataset, collate, open_records
from openofa.errors import OFAError

IMG = b64("a_200x150_rgb")  # 200 x 150
NOT_AN_IMAGE = base64.b64encode(b"this is not an image at all, just bytes").decode()

# (task, rows, bad row numbers (1-based), kind, message part)
CASES = [
    ("caption", [[1, 0, "ok", "", IMG], [2, 0, "short row"]], 2, "columns", "expected at least 5"),
    ("caption", [[1, 0, "ok", "", IMG], [2, 0, "bad image", "", NOT_AN_IMAGE]], 2, "image", "not an image"),
    ("caption", [[1, 0, "ok", "", "@@not base64@@"]], 1, "image", "base64"),
    ("caption", [[1, 0, "ok", "", IMG[: len(IMG) // 2]]], 1, "image", "image"),  # truncated image
    ("refcoco", [[1, 0, "the square", "20,30,80,100", IMG], [2, 0, "off", "150,30,260,100", IMG]],
     2, "box", "outside the image"),
    ("refcoco", [[1, 0, "inverted", "80,30,20,100", IMG]], 1, "box", "inverted"),
    ("refcoco", [[1, 0, "three numbers", "1,2,3", IMG]], 1, "box", "4 comma-separated"),
    ("vqa", [[1, 0, "what?", "1.0|!+red", "", IMG], [2, 0, "what?", "red", "", IMG]], 2, "answers", "conf|!+answer"),
    ("vqa", [[1, 0, "what?", "high|!+red", "", IMG]], 1, "answers", "confidence"),
    ("snli_ve", [[1, 0, IMG, "hyp", "prem", "entailment"], [2, 0, IMG, "hyp", "prem", "perhaps"]],
     2, "label", "unknown entail label"),
    ("mnli", [["a", "b", 0], ["a", "b", 7]], 2, "label", "unknown mnli label"),
]


@pytest.mark.parametrize("task,rows,bad,kind,part", CASES)
def test_raise_names_file_and_line(tmp_path, task, rows, bad, kind, part):
    f = write_tsv(tmp_path / f"{task}.tsv", rows)
    ds = build_dataset(task, f, patch_image_size=32)
    for i in range(bad - 1):
        assert not isinstance(ds[i], Skipped)
    with pytest.raises(OFAError) as err:
        ds[bad - 1]
    msg = str(err.value)
    assert msg.startswith(f"{f}:{bad}: ") and part in msg and "\n" not in msg
    assert isinstance(err.value, BadRow) and err.value.kind == kind


@pytest.mark.parametrize("task,rows,bad,kind,part", CASES)
def test_skip_counts_and_reports(tmp_path, task, rows, bad, kind, part):
    f = write_tsv(tmp_path / f"{task}.tsv", rows)
    ds = build_dataset(task, f, patch_image_size=32, on_error="skip")
    items = [ds[i] for i in range(len(ds))]
    assert isinstance(items[bad - 1], Skipped) and items[bad - 1].where == f"{f}:{bad}"
    assert ds.skipped == 1
    summary = ds.skip_summary()
    assert summary["by_kind"] == {kind: 1} and summary["messages"][0].startswith(f"{f}:{bad}: ")
    batch = collate(items)
    assert batch.get("skipped") == 1 if len(items) > 1 else batch == {}


def test_jsonl_bad_rows(tmp_path):
    shutil.copy(IMAGES / "a_200x150_rgb.png", tmp_path / "a.png")
    f = write_jsonl(tmp_path / "train.jsonl", [
        {"image": "a.png", "text": "the square", "box": [20, 30, 80, 100]},
        '{"image": "a.png", "text": "broken json"',
        ["not", "an", "object"],
        {"image": "a.png", "box": [20, 30, 80, 100]},
        {"image": "missing.png", "text": "no file", "box": [20, 30, 80, 100]},
        {"image": "a.png", "text": "outside", "box": [0, 0, 300, 100]},
        {"image": "a.png", "text": "ok again", "box": "0,0,200,150"},
    ])
    ds = build_dataset("ground", f, on_error="skip")
    items = [ds[i] for i in range(len(ds))]
    assert [isinstance(x, Skipped) for x in items] == [False, True, True, True, True, True, False]
    assert ds.skip_summary()["by_kind"] == {"json": 2, "field": 1, "image": 1, "box": 1}
    messages = [x.message for x in items if isinstance(x, Skipped)]
    assert messages[0].startswith(f"{f}:2: bad JSON")
    assert messages[2] == f"{f}:4: missing field 'text'"
    assert messages[3].startswith(f"{f}:5: ") and "missing.png" in messages[3]
    strict = build_dataset("ground", f)
    with pytest.raises(OFAError, match=f"^{f}:2: bad JSON"):
        strict[1]


def test_jsonl_vqa_boxes_are_checked(tmp_path):
    shutil.copy(IMAGES / "a_200x150_rgb.png", tmp_path / "a.png")
    q = {"image": "a.png", "question": "what color is it?", "answers": {"red": 1.0}}
    f = write_jsonl(tmp_path / "vqa.jsonl", [q, dict(q, box=[20, 30, 80, 100]), dict(q, box=[0, 0, 300, 100]),
                                             dict(q, box=[80, 30, 20, 100])])
    ds = build_dataset("vqa", f, patch_image_size=100, on_error="skip", shard=None)
    items = [ds[i] for i in range(len(ds))]
    assert "attend_box" not in items[0]
    assert items[1]["attend_box"].tolist() == pytest.approx([10, 20, 40, 200 / 3])  # 200x150 -> 100x100
    assert [isinstance(x, Skipped) for x in items] == [False, False, True, True]
    assert ds.skip_summary()["by_kind"] == {"box": 2}
    off = build_dataset("vqa", f, patch_image_size=100, on_error="skip", shard=None, attend_box=False)
    assert "attend_box" not in off[1]


def test_skipped_rows_are_counted_across_dataloader_workers(tmp_path, caplog):
    rows = []
    for i in range(12):
        answers = "broken" if i % 4 == 1 else "1.0|!+yes"
        rows.append([i, 0, "is it?", answers, "", IMG])
    f = write_tsv(tmp_path / "vqa.tsv", rows)
    ds = build_dataset("vqa", f, patch_image_size=16, on_error="skip", shard=None)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=ds.collater)
    batches = list(loader)
    ids = sorted(int(i) for b in batches for i in b["id"])
    assert ids == [i for i in range(12) if i % 4 != 1]
    assert sum(b.get("skipped", 0) for b in batches) == 3
    assert ds.skipped == 3  # counted in the workers, visible here
    assert ds.skip_summary()["by_kind"] == {"answers": 3}
    assert len(ds.skip_summary()["messages"]) == 3
    with caplog.at_level(logging.WARNING, logger="openofa.data.dataset"):
        summary = ds.end_epoch()
    assert summary["skipped"] == 3
    assert any("skipped 3 bad rows" in r.getMessage() and "answers: 3" in r.getMessage() for r in caplog.records)
    assert ds.skipped == 0  # reset for the next epoch


def test_raise_policy_through_a_dataloader(tmp_path):
    f = write_tsv(tmp_path / "cap.tsv", [[1, 0, "fine", "", IMG], [2, 0, "bad", "", NOT_AN_IMAGE]])
    ds = build_dataset("caption", f, patch_image_size=16)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=ds.collater)
    batches = iter(loader)
    try:
        next(batches)
        message = None
    except OFAError as e:  # re-raised by torch with the worker's traceback appended
        message = str(e)
    # torch keeps the iterator alive in a reference cycle after a worker error, and its
    # shutdown from the garbage collector then waits 5 s for the worker: shut it down now.
    batches._shutdown_workers()
    assert message is not None and f"{f}:2: " in message


def test_records_skip_and_iteration(tmp_path):
    f = write_tsv(tmp_path / "vqa.tsv", [[1, 0, "q", "1.0|!+a", "", IMG], [2, 0, "q", "", "", IMG]])
    reader = open_records("vqa", f, on_error="skip")
    assert [r.id for r in reader] == ["1"] and reader.skipped == 1
    with pytest.raises(OFAError, match=f"{f}:2: no answers"):
        list(open_records("vqa", f))


def test_bad_options(tmp_path):
    f = write_tsv(tmp_path / "cap.tsv", [[1, 0, "fine", "", IMG]])
    with pytest.raises(OFAError, match="on_error"):
        build_dataset("caption", f, on_error="ignore")
    with pytest.raises(OFAError, match="unknown option 'beam'"):
        build_dataset("caption", f, beam=5)
    with pytest.raises(OFAError, match="prompt_type"):
        build_dataset("vqa", f, prompt_type="both")
