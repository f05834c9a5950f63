"""The `ofa` command: inputs from files, folders and TSV; JSON output; drawing; convert; errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from support import GOLDEN
from openofa.cli import main
from openofa.config import get_config

IMG_A = str(GOLDEN / "images" / "a_200x150_rgb.png")
IMG_B = str(GOLDEN / "images" / "b_640x480_rgb.png")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    from openofa.checkpoints import save_pretrained

    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_pretrained(folder, get_config("tiny"), tiny_model.state_dict())
    return str(folder)


def _one_error(err: str, message: str) -> bool:
    """stderr ends with one ``error:`` line holding ``message``; before it only the model's name
    (``model:``), warnings and skipped inputs, never a traceback."""
    *before, last = err.splitlines()
    return last.startswith("error: ") and message in last and all(
        line.startswith(("model: ", "warning: ", "skipped: ")) for line in before)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_caption_json_over_files_and_folder(capsys, model_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.open(IMG_A).save(folder / "one.png")
    code, out, _ = _run(capsys, "caption", "--model", model_dir, "--image-size", "256", "--json",
                        "--no-progress", IMG_B, str(folder))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in rows] == [IMG_B, str(folder / "one.png")]
    golden = json.loads((GOLDEN / "generate_caption_beam5.json").read_text())
    assert rows[0]["score"] == pytest.approx(golden["hypos"][0][0]["score"], abs=1e-4)


def test_caption_from_original_tsv(capsys, model_dir, tmp_path):
    b64 = base64.urlsafe_b64encode(open(IMG_A, "rb").read()).decode()
    tsv = tmp_path / "caption_test.tsv"
    tsv.write_text(f"7\timg7\ta red square\tsquare&&circle\t{b64}\n")
    code, out, _ = _run(capsys, "caption", "--model", model_dir, "--image-size", "256", str(tsv))
    assert code == 0
    name, caption = out.strip().split("\t")
    assert name == "7" and caption


def test_tsv_with_missing_columns_names_file_and_line(capsys, model_dir, tmp_path):
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("1\timg\tcaption\tobjs\tAAAA\n2\tonly-two\n")
    code, out, err = _run(capsys, "caption", "--model", model_dir, str(tsv))
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and f"{tsv}:2" in err and "columns" in err


def test_ground_draws_the_box(capsys, model_dir, tmp_path):
    code, out, _ = _run(capsys, "ground", "--model", model_dir, IMG_B,
                        "-t", "a yellow circle", "--draw", str(tmp_path), "--json")
    assert code == 0
    res = json.loads(out)
    x1, y1, x2, y2 = res["box"]
    drawn = Image.open(res["drawn"]).convert("RGB")
    assert drawn.size == (640, 480)
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
    assert drawn.getpixel((int(x1) + 1, int((y1 + y2) / 2))) == (255, 0, 0)  # left edge of the box
    assert Image.open(IMG_B).convert("RGB").getpixel((int(x1) + 1, int((y1 + y2) / 2))) != (255, 0, 0)


def test_vqa_with_candidates_and_mode(capsys, model_dir):
    code, out, _ = _run(capsys, "vqa", "--model", model_dir, "--image-size", "256", IMG_B, "-q",
                        "what color is the circle", "--answers", "red,blue,yellow", "--json")
    assert code == 0 and json.loads(out)["answer"] in {"red", "blue", "yellow"}


def test_text_tasks(capsys, model_dir):
    code, out, _ = _run(capsys, "classify-text", "--model", model_dir, "--task", "sst2", "--text", "great")
    assert code == 0 and out.strip().split("\t")[1] in {"negative", "positive"}
    code, out, _ = _run(capsys, "summarize", "--model", model_dir, "--text", "a long story", "--max-len-b", "4")
    assert code == 0 and out.startswith("text\t")


@pytest.mark.parametrize("speedup", [2.5, 0.6])
def test_auto_dtype_gives_the_float32_tokens(capsys, model_dir, monkeypatch, speedup):
    from openofa import precision

    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)  # a CPU with and without fast bf16
    argv = ["caption", "--model", model_dir, "--image-size", "256", "--json", IMG_B]
    code, auto, _ = _run(capsys, *argv, "--dtype", "auto")
    assert code == 0
    _, fp32, _ = _run(capsys, *argv)
    assert json.loads(auto)["caption"] == json.loads(fp32)["caption"]


@pytest.mark.parametrize("argv, message", [
    (["caption", "/no/such.png"], "input not found: /no/such.png"),
    (["vqa", IMG_A], "give --question"),
    (["caption", IMG_A, "--cols", "image"], "bad column selection"),
    (["caption", IMG_A, "--device", "tpu"], "unknown device 'tpu'"),
    (["caption", IMG_A, "--batch-size", "-1"], "batch size must be a positive integer, got -1"),
    (["caption", IMG_A, "--no-repeat-ngram-size", "-1"], "no_repeat_ngram_size and min_len must be >= 0"),
])
def test_input_errors_are_one_line(capsys, model_dir, argv, message):
    code, out, err = _run(capsys, *argv[:1], "--model", model_dir, *argv[1:])
    assert code == 2 and out == ""
    assert _one_error(err, message)


def test_bad_checkpoint_is_one_line(capsys, tmp_path):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"not a checkpoint at all")
    code, _, err = _run(capsys, "caption", "--model", str(junk), IMG_A)
    assert code == 2 and "model.pt" in err and err.count("\n") == 1


def test_convert_official_roundtrip(capsys, model_dir, tmp_path, tiny_model):
    official = tmp_path / "tiny.pt"
    assert _run(capsys, "convert", model_dir, str(official), "--to", "official")[0] == 0
    back = tmp_path / "back"
    assert _run(capsys, "convert", str(official), str(back))[0] == 0
    from openofa.checkpoints import load_checkpoint

    _, sd, _ = load_checkpoint(back)
    ref = tiny_model.state_dict()
    assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)


def test_demo_writes_the_drawn_box(capsys, model_dir, tmp_path):
    code, out, _ = _run(capsys, "demo", "--model", model_dir, "--out", str(tmp_path / "demo"))
    assert code == 0 and "caption:" in out and "ground:" in out
    assert (tmp_path / "demo" / "example_box.png").is_file()
    assert "detect:" not in out  # the tiny model records no tasks: only what every model does


def test_demo_of_the_shipped_model_shows_detection_drawing_and_reading(capsys, tmp_path):
    from PIL import Image

    from openofa.mini.demo import READING
    from openofa.mini.draw import judge

    code, out, _ = _run(capsys, "demo", "--out", str(tmp_path / "demo"))
    detected = [line for line in out.splitlines() if line.startswith("detect:")]
    assert code == 0 and len(detected) == 1 and "circle" in detected[0] and "square" in detected[0]
    drawn = [line for line in out.splitlines() if line.startswith("imagine:")]
    files = sorted((tmp_path / "demo").glob("drawing_*.png"))
    assert len(drawn) == 1 and len(files) == 4 and all(str(f) in drawn[0] for f in files)
    # the drawing model draws the demo's text: red and blue are in most of its drawings
    with_both = [judge(Image.open(f), "a red circle left of a blue square").colour == [True, True] for f in files]
    assert sum(with_both) >= 2
    # the reading model reads the demo's words from the images it wrote
    read = [line for line in out.splitlines() if line.startswith("ocr:")]
    want = [f"ocr:      {tmp_path / 'demo' / f'reading_{k}.png'} -> {word.lower()}" for k, word in enumerate(READING)]
    assert read == want  # in lower case, as OCR targets are normalised


def _scene_folder(tmp_path, n=3):
    from openofa.mini.scenes import write_dataset

    files = write_dataset(tmp_path / "scenes", n=n, seed=0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(sorted((files["caption"].parent / "images").iterdir())):
        img.rename(folder / f"{i}_good.png")
    (folder / "1_fake.jpg").write_bytes(b"this is not a jpeg")
    return folder


def test_results_stream_out_and_a_bad_input_stops_the_run_after_them(capsys, tmp_path):
    folder = _scene_folder(tmp_path)
    code, out, err = _run(capsys, "caption", str(folder), "--batch-size", "1", "--no-progress")
    assert code == 2 and _one_error(err, "1_fake.jpg")
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(folder / "0_good.png")]


def test_skip_bad_reports_each_bad_input_and_goes_on(capsys, tmp_path):
    folder = _scene_folder(tmp_path)
    code, out, err = _run(capsys, "caption", str(folder), "--skip-bad", "--json", "--no-progress")
    names = [json.loads(line)["input"] for line in out.splitlines()]
    assert names == [str(folder / f"{i}_good.png") for i in range(3)]
    assert code == 2 and "skipped:" in err and "1_fake.jpg" in err and "1 input(s) skipped" in err
    # a data file's bad row is named by file and line
    rows = [json.dumps({"id": 1, "image": "0_good.png", "caption": "x"}), "{not json",
            json.dumps({"id": 3, "image": "2_good.png", "caption": "x"})]
    (folder / "rows.jsonl").write_text("\n".join(rows) + "\n")
    code, out, err = _run(capsys, "caption", str(folder / "rows.jsonl"), "--skip-bad", "--no-progress")
    assert code == 2 and [line.split("\t")[0] for line in out.splitlines()] == ["1", "3"]
    assert f"{folder / 'rows.jsonl'}:2" in err


def test_drawing_never_fails_on_a_box_given_corners_in_any_order(tmp_path):
    from openofa.vision.draw import draw_boxes

    out = draw_boxes(IMG_A, [([150.0, 70.0, 20.0, 10.0], "inverted"), ([5, 5, 5, 5], "empty")], tmp_path / "x.png")
    assert Image.open(out).size == (200, 150)


def test_draw_outputs_of_inputs_sharing_a_stem_do_not_collide(capsys, tmp_path):
    folder = _scene_folder(tmp_path, n=1)
    (folder / "1_fake.jpg").unlink()
    Image.open(folder / "0_good.png").convert("RGB").save(folder / "0_good.jpg")
    code, out, _ = _run(capsys, "ground", str(folder), "-t", "the circle", "--draw", str(tmp_path / "d"), "--json",
                        "--no-progress")
    drawn = [json.loads(line)["drawn"] for line in out.splitlines()]
    assert code == 0 and len(set(drawn)) == 2 and all(Path(d).is_file() for d in drawn)


def _bundled_with(tmp_path, **changes):
    """A copy of the shipped model whose config.json has ``changes``."""
    import shutil

    from openofa.weights import bundled_model

    folder = tmp_path / "model"
    shutil.copytree(bundled_model(), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return str(folder)


@pytest.mark.parametrize("argv, message", [
    (["vqa", "{img}", "-q", "\udcff what"], "vqa: input 0: question is not valid UTF-8 text"),
    (["summarize", "{bad_tsv}"], "not valid UTF-8"),
    (["caption", "{img}", "--model", "{str_layers}"], "config field decoder_layers must be an integer, got '3'"),
    (["caption", "{img}", "--model", "{float_layers}"], "config field decoder_layers must be an integer, got 3.0"),
    (["scenes", "{a_file}", "--n", "2"], "is a file, not a folder"),
    (["scenes", "{a_file}/sub", "--n", "2"], "Not a directory"),
    (["scenes", "{out}", "--questions", "-1"], "questions must be an integer >= 0, got -1"),
    (["scenes", "{out}", "--n", "-5"], "n must be an integer >= 1, got -5"),
    (["scenes", "{out}", "--read", "--n", "0"], "read: n must be an integer >= 1, got 0"),
    (["demo", "--out", "{a_file}/sub"], "Not a directory"),
    (["caption", "{img}", "--image-size", "7"], "image size 7 is not a positive multiple of 16"),
    (["caption", "{img}", "--image-size", "129"], "use 128 or 144"),
    (["caption", "{img}", "--sampling", "--sampling-topp", "2"], "sampling_topp must be in (0, 1]"),
    (["eval", "caption", "{captions}", "--limit", "0"], "limit must be a positive number of rows, got 0"),
])
def test_careless_input_is_a_one_line_error(capsys, tmp_path, argv, message):
    from openofa.mini.scenes import write_dataset

    files = write_dataset(tmp_path / "s", n=1, seed=0)
    (tmp_path / "bad.tsv").write_bytes(b"a\t\xff\xfe\n")
    (tmp_path / "afile").write_text("x")
    values = {"img": str(next((tmp_path / "s" / "images").iterdir())), "bad_tsv": str(tmp_path / "bad.tsv"),
              "a_file": str(tmp_path / "afile"), "out": str(tmp_path / "new"), "captions": str(files["caption"])}
    if any("layers" in a for a in argv):
        values["str_layers"] = _bundled_with(tmp_path / "a", decoder_layers="3")
        values["float_layers"] = _bundled_with(tmp_path / "b", decoder_layers=3.0)
    code, out, err = _run(capsys, *[a.format(**values) for a in argv])
    assert code == 2 and _one_error(err, message), err
    if argv[0] == "scenes":
        assert not (tmp_path / "new").exists()


def test_every_command_names_its_model_and_refuses_what_it_was_not_trained_for(capsys, tmp_path):
    from openofa.mini.scenes import write_dataset

    files = write_dataset(tmp_path / "s", n=1, seed=0)
    img = str(next((tmp_path / "s" / "images").iterdir()))
    code, out, err = _run(capsys, "caption", img, "--no-progress")
    assert code == 0 and err.splitlines()[0].startswith("model: the project's own small model")
    assert "trained for caption, vqa, ground, detect" in err
    code, _, err = _run(capsys, "classify", img, "--classes", "cat,person,rocket")
    assert code == 2 and _one_error(err, "this model was not trained for classify")
    code, _, err = _run(capsys, "classify", img, "--classes", "cat,person,rocket", "--any-task")
    assert code == 2 and _one_error(err, "no word for classes 'cat', 'person', 'rocket'")
    code, _, err = _run(capsys, "vqa", img, "-q", "what colour is it?", "--answers", "red,dog,cat", "--mode", "allcand")
    assert code == 2 and _one_error(err, "no word for answers 'cat', 'dog'")
    code, out, err = _run(capsys, "vqa", img, "-q", "is the cat red?", "--no-progress")
    assert code == 0 and out and "warning: vqa: the model does not know the word(s) cat of the question" in err
    code, _, err = _run(capsys, "eval", "caption", str(files["caption"]), "--no-progress")
    assert code == 0 and err.startswith("model: ")


def test_a_glue_file_is_read_with_its_task_layout(capsys, tmp_path, model_dir):
    """classify-text reads a TSV in the layout of the GLUE task given (--task; MNLI's by default,
    as the inputs' own default task)."""
    two = tmp_path / "pairs.tsv"
    two.write_text("a fine film\ta good film\t1\n")
    code, out, err = _run(capsys, "classify-text", str(two), "--model", model_dir, "--json", "--no-progress")
    assert code == 0 and json.loads(out)["input"] == f"{two}:1", err
    assert set(json.loads(out)["scores"]) == {"maybe", "yes", "no"}  # MNLI's labels
    one = tmp_path / "sst2.tsv"
    one.write_text("a fine film\t1\n")
    code, out, err = _run(capsys, "classify-text", str(one), "--task", "sst2", "--model", model_dir, "--json",
                          "--no-progress")
    assert code == 0 and set(json.loads(out)["scores"]) == {"negative", "positive"}, err
