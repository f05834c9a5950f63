"""The Chinese recipes (MUGE captioning, RefCOCO-CN grounding, OCR) train as the English ones do:
each runs two updates here on the fixtures' Chinese rows, from a small Chinese model standing in
for OFA-CN base, and its exported model then runs its task."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CN = ROOT / "tests" / "fixtures" / "cn"


@pytest.fixture(scope="module")
def tiny_cn(tmp_path_factory):
    import torch

    from openofa.checkpoints import save_pretrained
    from openofa.config import get_config
    from openofa.model import build_model

    torch.manual_seed(0)
    cfg = get_config("tiny", vocab_size=30325, language="zh", disable_entangle=True)
    folder = tmp_path_factory.mktemp("tiny_cn") / "model"
    save_pretrained(folder, cfg, build_model(cfg).state_dict())
    return folder


def _refcoco_cn_rows(path: Path) -> Path:
    """Three grounding rows in the RefCOCO layout over the fixtures' images."""
    from openofa.vision.io import load_image

    rows = []
    for i, (name, text) in enumerate([("b_640x480_rgb.png", "黄色的圆"), ("a_200x150_rgb.png", "左边的方块"),
                                      ("d_300x400_rgb.png", "红色的屋顶")]):
        import base64

        data = base64.urlsafe_b64encode((CN / "images" / name).read_bytes()).decode()
        w, h = load_image(CN / "images" / name).size
        rows.append(f"{i}\t{i}\t{text}\t{w * 0.1:.1f},{h * 0.2:.1f},{w * 0.6:.1f},{h * 0.7:.1f}\t{data}\n")
    path.write_text("".join(rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("recipe, task, data", [
    ("muge_caption_cn_base", "caption", "inputs/caption_cn_test.tsv"),
    ("refcoco_cn_base", "ground", None),
    ("ocr_cn_base", "ocr", "inputs/ocr_cn_test.tsv"),
])
def test_chinese_recipe_trains_and_its_model_runs(tmp_path, tiny_cn, recipe, task, data, capsys):
    import openofa
    from openofa.train.cli import main

    train = CN / data if data else _refcoco_cn_rows(tmp_path / "refcoco_cn.tsv")
    argv = [str(ROOT / "recipes" / f"{recipe}.yaml"), "--run-dir", str(tmp_path / "run"),
            "--set", "model=tiny", "--set", f"init_from={tiny_cn}", "--set", f"train_data={train}",
            "--set", "valid_data=", "--set", "max_update=2", "--set", "batch_size=2", "--set", "update_freq=1",
            "--set", "precision=fp32", "--set", "num_workers=0", "--set", "data.patch_image_size=128",
            "--set", "validate_every_epochs=0", "--set", "validate_every_updates=0", "--set", "progress=false"]
    assert main(argv) == 0, capsys.readouterr().err
    m = openofa.load(tmp_path / "run" / "final")
    assert m.tokenizer.language == "zh" and m.model.config.disable_entangle
    assert m.trained_tasks() == [task]
    image = str(CN / "images" / ("ocr1_cn.png" if task == "ocr" else "a_200x150_rgb.png"))
    item = {"image": image, **({"text": "左边的方块"} if task == "ground" else {})}
    (result,) = m.run(task, [item], max_len_b=4, **({"min_len": 4} if task == "ground" else {}))
    assert isinstance(result[m.task(task).output], (str, list, type(None)))
