"""The image trunk in static int8 (CPU): judged by quality against float32, not by identical tokens."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from openofa.errors import OFAError
from openofa.model.int8_trunk import Int8Trunk, activation_max, calibrate, int8_trunk_available, quantize_trunk
from support import GOLDEN_GENERATION_CASES, check_golden_near_ties

pytestmark = pytest.mark.skipif(not int8_trunk_available(), reason="this PyTorch build has no oneDNN int8 convolutions")


def normalised(images) -> torch.Tensor:
    """PIL images as the recipe models' inputs (mean and std 0.5)."""
    x = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return (torch.from_numpy(x).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5


def scenes(side: int, n: int = 8, seed: int = 1_000_000) -> torch.Tensor:
    from openofa.mini.scenes import make_scene

    return normalised([make_scene(seed + i, size=(side, side)).image for i in range(n)])


def default_calibration(side: int) -> torch.Tensor:
    from openofa.vision.calibration import calibration_images

    return normalised(calibration_images(16, side))


@pytest.fixture(scope="module")
def pair(tiny_model):
    fp32 = copy.deepcopy(tiny_model).fold_batchnorm()
    int8 = copy.deepcopy(fp32)
    trunk = quantize_trunk(int8, [default_calibration(384)])  # what OFA.load(dtype="int8") calibrates on
    assert int8.encoder.embed_images is trunk and isinstance(trunk, Int8Trunk)
    assert quantize_trunk(int8, [scenes(384)]) is trunk  # a second call changes nothing
    return fp32, int8


def test_int8_features_are_close_to_float32_but_not_equal(pair):
    fp32, int8 = pair
    x = scenes(256, n=4, seed=7)
    with torch.inference_mode():
        want = fp32.encoder.embed_images(x)
        got = int8.encoder.embed_images(x)
        got_bf16 = int8.encoder.embed_images(x.bfloat16())
    assert got.shape == want.shape and got.dtype == torch.float32 and got_bf16.dtype == torch.bfloat16
    err = ((got - want).norm() / want.norm()).item()
    assert 0 < err < 0.08, err  # really quantised, and within a few percent (docs/benchmarks.md)
    # bf16 images quantise from bf16 pixels: a few codes move, the features come out in bf16
    # (within the same envelope; 7-bit activations, on CPUs without VNNI, move more codes)
    assert ((got_bf16.float() - got).norm() / got.norm()).item() < 0.08


def test_calibration_measures_what_the_float_trunk_computes(tiny_model):
    trunk = copy.deepcopy(tiny_model).eval().fold_batchnorm().encoder.embed_images
    x = scenes(128, n=2)
    ranges = calibrate(trunk, [x[:1], x[1:]])
    with torch.inference_mode():
        stem = torch.relu(trunk.conv1(x))
        out = trunk(x)
    assert ranges["input"] == [pytest.approx(float(x.min())), pytest.approx(float(x.max()))]
    assert ranges["stem"] == pytest.approx(float(stem.max()), rel=1e-5)
    assert ranges["blocks"][-1]["out"] == pytest.approx(float(out.max()), rel=1e-4)
    assert len(ranges["blocks"]) == sum(len(s) for s in (trunk.layer1, trunk.layer2, trunk.layer3))
    assert activation_max() in (127, 255)


@pytest.mark.parametrize("name", GOLDEN_GENERATION_CASES)
def test_golden_best_hypotheses_equal_float32_except_near_ties(pair, name):
    check_golden_near_ties(*pair, name)


def test_bundled_model_held_out_quality_within_one_point(tmp_path):
    from openofa import OFA
    from openofa.evaluate import evaluate
    from openofa.mini.scenes import write_dataset

    files = write_dataset(tmp_path, n=30, seed=0)
    fp32, int8 = OFA.load(), OFA.load(dtype="int8")
    assert isinstance(int8.model.encoder.embed_images, Int8Trunk)
    assert int8.model.encoder.layers[0].fc1.weight.dtype == torch.float32  # the rest stays float32
    for task, metric in [("vqa", "VQA accuracy"), ("ground", "Acc@0.5"), ("caption", "CIDEr-D")]:
        want = evaluate(fp32, task, files[task], progress=False, limit=60, out_dir=tmp_path / "fp32" / task)
        got = evaluate(int8, task, files[task], progress=False, limit=60, out_dir=tmp_path / "int8" / task)
        changed = sum(a["prediction"] != b["prediction"] for a, b in zip(
            json.loads((tmp_path / "fp32" / task / "predictions.json").read_text()),
            json.loads((tmp_path / "int8" / task / "predictions.json").read_text())))
        # 1 point (metrics are fractions), or one changed example where one moves the metric more
        # (a caption's CIDEr-D alone is worth up to ~10 points of 30) (docs/benchmarks.md, "Reduced precision")
        if task == "ground":
            changed = round(abs(got[metric] - want[metric]) * got["count"])  # boxes move a little; count hits
        assert abs(got[metric] - want[metric]) <= 0.01 or changed <= 1, (metric, want[metric], got[metric], changed)


def test_calibration_images_are_the_users_own(tmp_path):
    from openofa import OFA
    from openofa.mini.scenes import make_scene

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        make_scene(50 + i).image.save(paths[-1])
    dim = make_scene(60).image.point(lambda v: v // 4)  # a much darker image: smaller ranges
    a = OFA.load(dtype="int8", calibration=[str(p) for p in paths]).model.encoder.embed_images
    b = OFA.load(dtype="int8", calibration=[dim]).model.encoder.embed_images
    assert b.stem.y_scale < a.stem.y_scale
    with pytest.raises(OFAError, match="calibration images are for dtype='int8'"):
        OFA.load(calibration=[dim])
    with pytest.raises(OFAError, match="at least one image"):
        OFA.load(dtype="int8", calibration=[])
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(OFAError, match="bad.png"):
        OFA.load(dtype="int8", calibration=[str(tmp_path / "bad.png")])


def test_cli_takes_calibration_images_and_names_bad_ones(tmp_path, capsys):
    from openofa.cli import main
    from openofa.mini.scenes import make_scene

    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(2):
        make_scene(70 + i).image.save(folder / f"{i}.png")
    make_scene(80).image.save(tmp_path / "photo.png")
    assert main(["caption", "--dtype", "int8", "--calibration", str(folder), "--json", "--no-progress",
                 str(tmp_path / "photo.png")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and '"caption"' in out[0]
    assert main(["caption", "--dtype", "int8", "--calibration", str(tmp_path / "missing"),
                 str(tmp_path / "photo.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: --calibration: {tmp_path / 'missing'}: no such file or folder"
    assert not any("Traceback" in line for line in err)


def test_refusals(tiny_model):
    unfolded = copy.deepcopy(tiny_model).eval()
    with pytest.raises(OFAError, match="BatchNorms folded"):
        quantize_trunk(unfolded, [scenes(64, n=1)])
    with pytest.raises(OFAError, match="CPU only; the model is on meta"):
        quantize_trunk(copy.deepcopy(tiny_model).eval().fold_batchnorm().to("meta"), [scenes(64, n=1)])
    model = copy.deepcopy(tiny_model).eval().fold_batchnorm()
    trunk = quantize_trunk(model, [scenes(64, n=1)])
    with pytest.raises(OFAError, match="cannot be copied"):
        copy.deepcopy(trunk)
    with pytest.raises(OFAError, match="runs on CPU only; got images on meta"):
        trunk(torch.empty(1, 3, 64, 64, device="meta"))
