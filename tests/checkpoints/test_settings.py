"""The settings a released file carries beyond its architecture: read, checked, honoured by the
tasks, refused when openofa cannot honour them; EMA weights where the original evaluates them."""

from __future__ import annotations

import json

import pytest
import torch

from openofa.api import OFA
from openofa.checkpoints import load_checkpoint, save_official
from openofa.checkpoints.official import build_official
from openofa.checkpoints.settings import KEPT_TASK_FIELDS, REQUIRED_SETTINGS, ZERO_SHOT
from openofa.errors import OFAError
from openofa.vision.transforms import IMAGENET_MEAN, IMAGENET_STD
from support import GOLDEN, RELEASED_KINDS, released_layout

IMG = str(GOLDEN / "images" / "a_200x150_rgb.png")


def _ema(sd):
    ema = {k: v * 0.5 if v.is_floating_point() else v for k, v in sd.items()}
    for k in ("decoder.embed_tokens.weight", "decoder.output_projection.weight"):
        ema[k] = ema["encoder.embed_tokens.weight"]
    return ema


def test_ema_weights_are_the_default_where_the_file_carries_them(micro, tmp_path):
    config, sd = micro
    ema = _ema(sd)
    path = save_official(tmp_path / "vqa_base_best.pt", config, sd, ema_state_dict=ema)
    _, auto, meta = load_checkpoint(path, ema=None)
    assert meta["ema"] is True and torch.equal(auto["encoder.embed_tokens.weight"], ema["encoder.embed_tokens.weight"])
    _, plain, meta = load_checkpoint(path, ema=False)
    assert meta["ema"] is False and torch.equal(plain["encoder.embed_tokens.weight"], sd["encoder.embed_tokens.weight"])
    # a file without EMA weights: the plain ones, no error
    bare = save_official(tmp_path / "caption_best.pt", config, sd)
    assert load_checkpoint(bare, ema=None)[2]["ema"] is False
    with pytest.raises(OFAError, match="EMA"):
        load_checkpoint(bare, ema=True)


@pytest.mark.parametrize("field", sorted(REQUIRED_SETTINGS))
def test_a_switch_openofa_does_not_implement_is_refused_by_name(micro, tmp_path, field):
    config, sd = micro
    ckpt = build_official(config, sd)
    want = REQUIRED_SETTINGS[field]
    other = {True: False, False: True, None: "64,128", "gelu": "relu", 0: 0.1}[want]
    ckpt["cfg"]["model"][field] = other
    torch.save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(OFAError, match=f"{field}={other!r}"):
        load_checkpoint(tmp_path / "odd.pt")


@pytest.mark.parametrize("field,value", [("prompt_type", "prefix"), ("constraint_range", "12"),
                                         ("patch_image_size", 0), ("max_src_length", -3)])
def test_task_settings_openofa_cannot_honour_are_refused(micro, tmp_path, field, value):
    config, sd = micro
    torch.save(build_official(config, sd, task={field: value}), tmp_path / "odd.pt")
    with pytest.raises(OFAError, match=field):
        load_checkpoint(tmp_path / "odd.pt")


@pytest.mark.parametrize("kind", RELEASED_KINDS)
def test_every_field_of_a_released_cfg_is_named_in_the_docs(kind):
    """docs/checkpoints.md says what happens to each field of the released files' cfg."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "checkpoints.md").read_text()
    cfg = released_layout(kind)["cfg"]
    missing = [f for f in sorted(set(cfg["model"]) | set(cfg["task"])) if f"`{f}`" not in doc]
    assert not missing


def test_imagenet_normalisation_travels_with_the_model(tiny_model):
    ofa = OFA(tiny_model, image_size=64, task_settings={"imagenet_default_mean_and_std": True})
    pre = ofa.preprocess("classify")
    assert (pre.mean, pre.std, pre.size) == (IMAGENET_MEAN, IMAGENET_STD, 64)
    plain = OFA(tiny_model, image_size=64).image_tensor(IMG, "classify")
    imagenet = ofa.image_tensor(IMG, "classify")
    # the same pixels, other statistics: x * 0.5 + 0.5 == y * std + mean
    back = imagenet * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    torch.testing.assert_close(back, plain * 0.5 + 0.5, atol=1e-5, rtol=0)


def test_task_specific_settings_apply_to_their_own_task_only(tiny_model):
    ofa = OFA(tiny_model, task_settings={"_name": "snli_ve", "prompt_type": "none", "max_src_length": 3,
                                         "patch_image_size": 384})
    assert ofa.setting("entail", "prompt_type") == "none" and ofa.setting("vqa", "prompt_type") is None
    assert ofa.setting("vqa", "max_src_length", 128) == 128
    assert ofa.task_image_size(ofa.task("vqa")) == 384  # the image side describes the model
    ex = ofa.task("entail").prepare(ofa, IMG, "a b c d e f")
    assert ex.prefix == []  # prompt_type none: nothing forced
    assert '" a b c "' in ofa.decode_text(ex.src)  # max_src_length 3: the first three words


@pytest.mark.parametrize("prompt_type", ["prev_output", "none", "src"])
def test_entailment_honours_the_files_prompt_type(tiny_model, prompt_type):
    ofa = OFA(tiny_model, image_size=64, task_settings={"_name": "snli_ve", "prompt_type": prompt_type})
    ex = ofa.task("entail").prepare(ofa, IMG, "two dogs play")
    assert ex.prefix == {"prev_output": ex.src[1:-1], "none": [], "src": ex.src[1:]}[prompt_type]
    out = ofa.run("entail", [{"image": IMG, "hypothesis": "two dogs play"}])[0]
    assert out["label"] in ("yes", "no", "maybe")


def test_constraint_range_of_the_file_limits_generation(tiny_model):
    cfg = tiny_model.config
    ofa = OFA(tiny_model, image_size=64, task_settings={"_name": "caption",
                                                        "constraint_range": f"{cfg.bin_0},{cfg.vocab_size}"})
    assert ofa.decoding({}, "caption")["constraint_range"] == f"{cfg.bin_0},{cfg.vocab_size}"
    ex = ofa.task("caption").prepare(ofa, IMG)
    hypo = ofa.generate([ex], dict(beam_size=2, max_len_b=5, min_len=5), task="caption")[0]
    assert all(t < 4 or t >= cfg.bin_0 for t in hypo.tokens.tolist())


def test_zero_shot_applies_the_original_zero_shot_scripts(tiny_model):
    ofa = OFA(tiny_model, task_settings={"_name": "unify_task", "patch_image_size": 256}, zero_shot=True)
    assert ofa.task_image_size(ofa.task("vqa")) == 480 and ofa.task_image_size(ofa.task("entail")) == 384
    assert ofa.task_image_size(ofa.task("ground")) == 480 and ofa.task_image_size(ofa.task("caption")) == 256
    assert ofa.setting("vqa", "prompt_type") == "none"
    settings = ofa.decoding(ofa.task("vqa").generation, "vqa")
    assert settings["beam_size"] == 20 and settings["normalize_scores"] is False
    assert ZERO_SHOT["vqa"]["generation"]["beam_size"] == 20
    plain = OFA(tiny_model, task_settings={"_name": "unify_task", "patch_image_size": 256})
    assert plain.task_image_size(plain.task("vqa")) == 256 and plain.setting("vqa", "prompt_type") is None


def test_chinese_grounding_expression_is_normalised(tiny_model):
    """As the original's RefCOCO-CN dataset: pre_caption (lower case, punctuation, spaces)."""
    from openofa.config import get_config
    from openofa.model import build_model

    model = build_model(get_config("base-zh", encoder_layers=1, decoder_layers=1)).eval()
    ofa = OFA(model, image_size=64)
    a = ofa.task("ground").prepare(ofa, IMG, "  左边的  RED 杯子")
    b = ofa.task("ground").prepare(ofa, IMG, "左边的 red 杯子")
    assert a.src == b.src


def test_kept_fields_are_plain_values():
    assert "imagenet_default_mean_and_std" in KEPT_TASK_FIELDS and "data" not in KEPT_TASK_FIELDS
    json.dumps(ZERO_SHOT)
