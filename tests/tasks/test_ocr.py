"""The ocr task against the original (tests/fixtures/cn, made with the Chinese training scripts'
flags): preprocessing, prompt, target normalisation, post-processing, teacher-forced logits,
and its metric; plus the one-line errors of inputs it cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openofa.api import OFA
from openofa.errors import OFAError
from openofa.tasks import get_task
from openofa.tasks.ocr import normalize_text, source
from openofa.text.tokenizer import OFATokenizer
from openofa.vision.io import decode_base64_image, load_image
from openofa.vision.transforms import ocr_transform

CN = Path(__file__).resolve().parents[1] / "fixtures" / "cn"
OFFSETS = (165, 77, 202)  # the original's random offsets under random.seed(7), recorded in the fixture


@pytest.fixture(scope="module")
def golden():
    with np.load(CN / "ocr_cn.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def rows():
    return [line.rstrip("\n").split("\t") for line in (CN / "inputs" / "ocr_cn_test.tsv").open(encoding="utf-8")]


@pytest.fixture(scope="module")
def zh():
    return OFATokenizer.from_language("zh")


def test_preprocessing_equals_the_original(golden, rows):
    for (_, b64, _), offset, want in zip(rows, OFFSETS, golden["patch_images"]):
        got = ocr_transform(load_image(decode_base64_image(b64)), 480, offset=offset)
        assert torch.equal(got, torch.from_numpy(want))
    # inference places the image in the middle of the same range: same rows of pixels, shifted
    img = load_image(decode_base64_image(rows[0][1]))  # 400x64 -> 480x76, 404 rows of padding
    centred = ocr_transform(img, 480)
    assert torch.equal(centred[:, 202:202 + 76], ocr_transform(img, 480, offset=165)[:, 165:165 + 76])


def test_inference_prepares_images_as_ocr_does(rows, zh):
    """The OCR task's examples carry the OCR preprocessing (centred), not a square resize."""
    from openofa.config import get_config
    from openofa.model import build_model

    ofa = OFA(build_model(get_config("tiny", vocab_size=30325, language="zh")), image_size=480)
    img = load_image(decode_base64_image(rows[0][1]))
    assert ofa.preprocess("ocr").mode == "ocr"
    assert torch.equal(ofa.task("ocr").prepare(ofa, image=img).image, ocr_transform(img, 480))


def test_prompt_targets_and_samples_equal_the_original(golden, rows, zh, tmp_path):
    from openofa.data import build_dataset

    assert source(zh) == golden["src_tokens"][0].tolist()
    tsv = tmp_path / "ocr.tsv"
    tsv.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    data = build_dataset("ocr", tsv, split="valid", tokenizer=zh, shard=None)
    for i, (want_tgt, want_prev) in enumerate(zip(golden["target"], golden["prev_output_tokens"])):
        sample = data[i]
        n = len(sample["target"])
        assert sample["target"].tolist() == want_tgt[:n].tolist() and set(want_tgt[n:].tolist()) <= {1}
        assert sample["prev_output_tokens"].tolist() == want_prev[:n].tolist()


def test_target_normalisation_and_post_processing_equal_the_original(zh):
    cases = json.loads((CN / "cn_tokenizer.json").read_text(encoding="utf-8"))["cases"]
    for case in cases:
        assert normalize_text(case["text"]) == case["ocr_target_text"], case["text"]
        decoded = "".join(zh.decode(zh.encode(case["text"])).split())
        assert decoded == case["post_ocr"], case["text"]


def test_teacher_forced_logits_equal_the_original(golden):
    from openofa.checkpoints.recipe import recipe_state_dict
    from openofa.config import get_config
    from openofa.model import model_from_state_dict

    cfg = get_config("base", vocab_size=30325, language="zh", disable_entangle=True)
    model = model_from_state_dict(cfg, recipe_state_dict(cfg)).eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(golden["src_tokens"]), patch_images=torch.from_numpy(golden["patch_images"]),
                       patch_masks=torch.from_numpy(golden["patch_masks"]),
                       prev_output_tokens=torch.from_numpy(golden["prev_output_tokens"]))
    values, indices = logits.float().topk(20, dim=-1)
    want_v, want_i = torch.from_numpy(golden["decoder_logits_top20_values"]), golden["decoder_logits_top20_indices"]
    torch.testing.assert_close(values, want_v, atol=2e-3, rtol=1e-4)
    assert (indices.numpy()[..., :5] == want_i[..., :5]).mean() > 0.99  # near-ties may swap deeper down


def test_metric_is_exact_match_and_normalised_edit_distance():
    t = get_task("ocr")
    scores = t.metric(["中华人民共和国", "ofa-ocr2022", ""], ["中华人民共和国", "ofa-ocr 2022", "abc"], t.layouts[0])
    assert scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["1-NED"] == pytest.approx(1 - (0 + 1 / 12 + 1) / 3)


def test_inputs_it_cannot_read_are_one_line_errors(tiny_model):
    from PIL import Image

    english = OFA(tiny_model, image_size=256)
    with pytest.raises(OFAError, match="this English model was not trained to read text"):
        english.ocr(Image.new("RGB", (200, 40), "white"))
    anyway = OFA(tiny_model, image_size=256, any_task=True)
    assert [isinstance(t, str) for t in anyway.ocr([Image.new("RGB", (200, 40), "white")] * 2, max_len_b=3)] == [True] * 2
    with pytest.raises(OFAError, match="5000x1 pixels is too thin to read"):
        ocr_transform(Image.new("RGB", (5000, 1), "white"), 480)
