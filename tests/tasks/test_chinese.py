"""OFA-CN against the original (tests/fixtures/cn, a Chinese base model with recipe weights and the
flags of the Chinese training scripts): captioning's source, teacher-forced logits and beam
search tokens, Chinese post-processing, and the grounding prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openofa.api import OFA

CN = Path(__file__).resolve().parents[1] / "fixtures" / "cn"


@pytest.fixture(scope="module")
def cn_base():
    from openofa.checkpoints.recipe import recipe_state_dict
    from openofa.config import get_config
    from openofa.model import model_from_state_dict

    cfg = get_config("base", vocab_size=30325, language="zh", disable_entangle=True)
    return model_from_state_dict(cfg, recipe_state_dict(cfg)).eval()


@pytest.fixture(scope="module")
def golden():
    with np.load(CN / "caption_cn.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((CN / "caption_cn_generate.json").read_text(encoding="utf-8"))


def test_vocabulary_layout():
    from openofa.text.tokenizer import OFATokenizer

    zh = OFATokenizer.from_language("zh")
    assert len(zh) == 30325 and zh.bin_0 == 29325 and zh.mask == 21132
    facts = json.loads((CN / "cn_tokenizer.json").read_text(encoding="utf-8"))["dictionary"]
    assert zh.encode("😀") == [104]  # BERT's [UNK] (104), never OFA's <unk> (3)
    assert facts


def test_teacher_forced_logits_equal_the_original(cn_base, golden):
    z, _ = golden
    with torch.inference_mode():
        logits = cn_base(torch.from_numpy(z["src_tokens"]), patch_images=torch.from_numpy(z["patch_images"]),
                         patch_masks=torch.from_numpy(z["patch_masks"]),
                         prev_output_tokens=torch.from_numpy(z["prev_output_tokens"])).float()
    torch.testing.assert_close(logits[0], torch.from_numpy(z["decoder_logits_sample0"]), atol=2e-3, rtol=1e-4)
    fixed = torch.from_numpy(z["fixed_vocab_indices"]).long()
    torch.testing.assert_close(logits[..., fixed], torch.from_numpy(z["decoder_logits_at_fixed_indices"]),
                               atol=2e-3, rtol=1e-4)


def test_caption_tokens_and_text_equal_the_original(cn_base, golden):
    _, gen = golden
    run = gen["runs"]["beam5_maxlenb20"]
    images = [str(CN / "images" / n) for n in gen["inputs"]["images"]]
    ofa = OFA(cn_base, image_size=480)
    task = ofa.task("caption")
    examples = [task.prepare(ofa, image=p) for p in images]
    assert [e.src for e in examples] == gen["inputs"]["src_tokens"]
    with torch.inference_mode():
        hypos = ofa.generate(examples, task.generation, task="caption", max_len_b=20)
    for h, want in zip(hypos, run["hypos"]):
        assert h.tokens.tolist() == want[0]["tokens"]
        assert h.score == pytest.approx(want[0]["score"], abs=1e-3)
    captions = ofa.caption(images, max_len_b=20)
    from openofa.text.tokenizer import join_cjk

    for got, want in zip(captions, run["eval_caption_cn_results"]):
        assert got == join_cjk(want["caption"])  # the original's Chinese text, characters written together
        assert "レ レ" not in got and "レレレ" in got


def test_chinese_post_processing_keeps_punctuation_and_joins_characters():
    from openofa.text.tokenizer import OFATokenizer, join_cjk

    zh = OFATokenizer.from_language("zh")
    cases = json.loads((CN / "cn_tokenizer.json").read_text(encoding="utf-8"))["cases"]
    by_text = {c["text"]: c for c in cases}
    assert join_cjk(zh.decode(zh.encode("一只小猫坐在沙发上。"))) == "一只小猫坐在沙发上。"
    assert join_cjk(zh.decode(zh.encode("《红楼梦》第3回"))) == "《红楼梦》第3回"
    assert join_cjk(zh.decode(zh.encode("iPhone14 Pro Max手机壳"))) == "iphone14 pro max手机壳"
    for text, case in by_text.items():
        assert zh.decode(zh.encode(text)) == case["decoded"], text


def test_grounding_prompt_is_the_original(cn_base):
    prompts = json.loads((CN / "cn_tokenizer.json").read_text(encoding="utf-8"))["prompts"]
    ofa = OFA(cn_base, image_size=512)
    ex = ofa.task("ground").prepare(ofa, image=str(CN / "images" / "a_200x150_rgb.png"),
                                    text=prompts["refcoco_example_text"])
    assert ex.src == prompts["refcoco_src_ids"]
    assert ofa.task("caption").prepare(ofa, image=str(CN / "images" / "a_200x150_rgb.png")).src == \
        prompts["caption_src_ids"]


def test_english_only_tasks_refuse_a_chinese_model(cn_base):
    from openofa.errors import OFAError

    ofa = OFA(cn_base, image_size=480)
    for call in (lambda: ofa.entail(str(CN / "images" / "a_200x150_rgb.png"), "一只猫"),
                 lambda: ofa.classify_text("好", task="sst2")):
        with pytest.raises(OFAError, match="this is a zh model and .* has prompts in en only"):
            call()


@pytest.mark.parametrize("arch, size", [("ofa_base", "base-zh"), ("ofa_large", "large-zh")])
def test_chinese_training_flags_map_to_the_chinese_sizes(arch, size):
    """What the Chinese scripts' checkpoints carry (``cfg.model``: arch, ``bpe=bert``, the BERT_CN
    vocabulary folder, the released flags) maps onto the size of that name with the Chinese
    vocabulary: 30,325 entries, codes from 21133, bins from 29325 (the large and RefCOCO-CN files
    share the base file's layout; only the arch differs)."""
    from openofa.config import OFAConfig, get_config
    from openofa.text.tokenizer import OFATokenizer

    args = {"arch": arch, "bpe": "bert", "bpe_dir": "../../utils/BERT_CN_dict", "vocab_size": 30325,
            "disable_entangle": True, "scale_attn": True, "scale_fc": True, "scale_heads": True,
            "patch_image_size": 512, "orig_patch_image_size": 256}
    cfg = OFAConfig.from_original(args)
    want = get_config(size)
    assert cfg.language == "zh" and cfg.vocab_size == 30325 and cfg.disable_entangle
    for field in ("encoder_layers", "decoder_layers", "encoder_embed_dim", "resnet_type", "encoder_attention_heads"):
        assert getattr(cfg, field) == getattr(want, field), field
    tok = OFATokenizer.for_config(cfg)
    assert (len(tok), tok.code_0, tok.bin_0) == (30325, 21133, 29325)
