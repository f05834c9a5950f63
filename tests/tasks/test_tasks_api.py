"""Tasks through the Python API: end-to-end parity with the golden generation cases and the
behaviour of every task (labels from the given sets, proper probabilities, clear errors)."""

from __future__ import annotations

import json
import math
import re
import string

import pytest
import torch

from support import GOLDEN
from openofa.api import OFA
from openofa.errors import OFAError

IMG = {n: str(GOLDEN / "images" / f"{n}.png") for n in ("a_200x150_rgb", "b_640x480_rgb", "c_320x240_gray")}


@pytest.fixture(scope="module")
def ofa256(tiny_model):
    """The golden generation cases ran at patch size 256 with the question as source only."""
    return OFA(tiny_model, image_size=256, task_settings={"prompt_type": "none"})


def _golden(name):
    return json.loads((GOLDEN / f"generate_{name}.json").read_text())


def test_caption_end_to_end_matches_original(ofa256):
    data = _golden("caption_beam5")
    got = ofa256.caption([IMG[n] for n in data["images"]])
    strip = str.maketrans({c: None for c in string.punctuation})
    assert got == [s.translate(strip).strip() for s in data["decoded_best"]]


def test_caption_greedy_option(ofa256):
    data = _golden("caption_greedy")
    res = ofa256.run("caption", [{"image": IMG[n]} for n in data["images"]], beam_size=1)
    want = [h[0]["score"] for h in data["hypos"]]
    assert [r["score"] for r in res] == pytest.approx(want, abs=1e-4)


def test_vqa_trie_end_to_end_matches_original(ofa256):
    data = _golden("vqa_trie_beam5")
    tok = ofa256.tokenizer
    questions = [tok.decode(ids[1:-1] if ids[-1] == 2 else ids[1:-2]).strip() for ids in data["src_tokens"]]
    imgs = [IMG[n] for n in data["images"]]
    got = ofa256.vqa(imgs, questions, answers=data["answers"], mode="trie")
    assert got == [s.strip() for s in data["decoded_best"]]
    # scoring every candidate picks the same answers (the trie beam keeps all of them)
    assert ofa256.vqa(imgs, questions, answers=data["answers"], mode="allcand") == got


def test_vqa_prev_output_prompt_strips_question(tiny_model):
    ofa = OFA(tiny_model, image_size=256)
    res = ofa.run("vqa", [{"image": IMG["a_200x150_rgb"], "question": "what is this"}], max_len_b=3)
    answer_tokens = ofa.tokenizer.encode(" " + res[0]["answer"]) if res[0]["answer"] else []
    assert len(answer_tokens) <= 3  # the forced question prefix is not part of the answer


def test_grounding_box_follows_location_tokens(ofa256, tiny_model):
    data = _golden("refcoco_bins_beam5")
    res = ofa256.run("ground", [{"image": IMG[n], "text": "a yellow circle"} for n in data["images"]])
    cfg = tiny_model.config
    for r, hyps, name in zip(res, data["hypos"], data["images"]):
        w, h = (640, 480) if name.startswith("b") else (200, 150)
        v = [b / (cfg.num_bins - 1) * 512 for b in hyps[0]["bins"]]
        want = [min(v[0] * w / 256, w), min(v[1] * h / 256, h), min(v[2] * w / 256, w), min(v[3] * h / 256, h)]
        assert r["box"] == pytest.approx(want, rel=1e-5)
        assert 0 <= r["box"][0] <= w and 0 <= r["box"][3] <= h


def test_grounding_with_prompt_as_decoder_prefix(tiny_model):
    # ground_prompt_type prev_output: the prompt is forced as a decoder prefix and the four bins
    # follow it; prompts of different lengths decode in one call as they do one by one
    from openofa.tasks.grounding import Grounding

    ofa = OFA(tiny_model, image_size=256, task_settings={"prompt_type": "none", "ground_prompt_type": "prev_output"})
    items = [{"image": IMG["a_200x150_rgb"], "text": "a yellow circle"},
             {"image": IMG["b_640x480_rgb"], "text": "the big red square on the left"},
             {"image": IMG["b_640x480_rgb"], "text": "a yellow circle"}]
    together = ofa.run("ground", items)
    # batched and one-by-one decoding run different kernel shapes: the same boxes, scores to rounding
    # (exactly equal on some CPUs, 1e-7 apart on others)
    for a, b in zip(together, [ofa.run("ground", [it])[0] for it in items]):
        assert a["box"] == pytest.approx(b["box"], rel=1e-5, abs=1e-4) and a["score"] == pytest.approx(b["score"], abs=1e-5)
    cfg = tiny_model.config
    task = Grounding()
    for r, it in zip(together, items):
        ex = task.prepare(ofa, **it)
        assert ex.prefix == ex.src[1:-1]
        hypo = task._generate(ofa, [ex], (cfg.bin_0, cfg.vocab_size), {"ordered_box": (cfg.bin_0, cfg.num_bins)})[0]
        toks = hypo.tokens.tolist()
        assert toks[: len(ex.prefix)] == ex.prefix and len(toks) == len(ex.prefix) + 5 and toks[-1] == cfg.eos
        bins = [t - cfg.bin_0 for t in toks[len(ex.prefix):-1]]
        assert all(0 <= b < cfg.num_bins for b in bins) and hypo.score == pytest.approx(r["score"], abs=1e-5)
        w, h = ex.info["w"], ex.info["h"]
        v = [b / (cfg.num_bins - 1) * 512 for b in bins]
        want = [min(v[0] / ex.info["w_ratio"], w), min(v[1] / ex.info["h_ratio"], h),
                min(v[2] / ex.info["w_ratio"], w), min(v[3] / ex.info["h_ratio"], h)]
        assert r["box"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(OFAError, match="ground_prompt_type"):
        OFA(tiny_model, image_size=256, task_settings={"ground_prompt_type": "src"}).run("ground", items[:1])


def test_entailment_scores_are_a_distribution_over_labels(ofa256):
    res = ofa256.run("entail", [{"image": IMG["b_640x480_rgb"], "hypothesis": "a yellow circle"},
                                {"image": IMG["a_200x150_rgb"], "hypothesis": "two cats", "premise": "a red square"}])
    for r in res:
        assert set(r["scores"]) == {"yes", "no", "maybe"}
        assert sum(math.exp(s) for s in r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == max(r["scores"], key=r["scores"].get)


def test_image_classification_is_order_independent(ofa256):
    classes = ["cat", "yellow circle", "red square", "dog"]
    a = ofa256.run("classify", [{"image": IMG["c_320x240_gray"]}], classes=classes)[0]
    b = ofa256.run("classify", [{"image": IMG["c_320x240_gray"]}], classes=classes[::-1])[0]
    assert a["label"] == b["label"] and a["label"] in classes
    assert dict(a["top"]) == pytest.approx(dict(b["top"]), abs=1e-5)


def test_text_classification_uses_glue_labels(ofa256):
    res = ofa256.run("classify-text", [{"text": "a man sleeps", "text2": "a person rests", "glue_task": "mnli"},
                                       {"text": "what a great film", "glue_task": "sst2"}])
    assert res[0]["label"] in ("maybe", "yes", "no")
    assert res[1]["label"] in ("negative", "positive")
    for r in res:
        assert sum(math.exp(s) for s in r["scores"].values()) == pytest.approx(1.0, abs=1e-4)


def test_summarize_respects_length_and_lowercase(ofa256):
    text = "The Quick Brown Fox jumps over the lazy dog near the river bank"
    res = ofa256.run("summarize", [{"text": text}], max_len_b=6)[0]
    assert res["summary"] == res["summary"].lower()
    assert 0 < len(res["summary"].split()) <= 6  # at most 6 generated tokens, each adds at most one word


def test_batched_and_single_inputs_agree(ofa256):
    single = ofa256.caption(IMG["a_200x150_rgb"])
    batch = ofa256.run("caption", [{"image": IMG["b_640x480_rgb"]}, {"image": IMG["a_200x150_rgb"]}], batch_size=2)
    assert isinstance(single, str) and batch[1]["caption"] == single


def test_many_inputs_across_batches_keep_their_order(ofa256):
    """A batch's inputs are prepared by a thread pool: results still follow the inputs."""
    import threading

    names = ["b_640x480_rgb", "a_200x150_rgb", "c_320x240_gray", "a_200x150_rgb", "b_640x480_rgb"]
    one = {n: ofa256.run("caption", [{"image": IMG[n]}])[0] for n in set(names)}
    threads = threading.active_count()
    try:
        for workers in (3, 1):  # a pool, and the plain loop
            ofa256.prepare_workers = workers
            many = ofa256.run("caption", [{"image": IMG[n]} for n in names], batch_size=3)
            assert threading.active_count() == threads  # the pool is gone
            assert [r["caption"] for r in many] == [one[n]["caption"] for n in names]
            assert [r["score"] for r in many] == pytest.approx([one[n]["score"] for n in names], abs=1e-5)
    finally:
        ofa256.prepare_workers = None


@pytest.mark.parametrize("first", ["missing", "broken"])
def test_the_first_bad_input_is_the_one_named(ofa256, tmp_path, first):
    """Inputs prepared at the same time in the pool still fail in input order."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad = {"missing": str(tmp_path / "missing.png"), "broken": str(broken)}
    second = "broken" if first == "missing" else "missing"
    items = [{"image": IMG["a_200x150_rgb"]}, {"image": bad[first]}, {"image": bad[second]}]
    with pytest.raises(OFAError, match=f"{first}.png"):
        ofa256.run("caption", items, batch_size=3)


@pytest.mark.parametrize("call, message", [
    (lambda o: o.caption("/no/such/image.png"), "no/such/image.png"),
    (lambda o: o.vqa(IMG["a_200x150_rgb"], "   "), "question is empty"),
    (lambda o: o.ground(IMG["a_200x150_rgb"], ""), "expression is empty"),
    (lambda o: o.classify(IMG["a_200x150_rgb"], []), "class names"),
    (lambda o: o.classify_text("x", task="nope"), "unknown glue_task 'nope'"),
    (lambda o: o.classify_text("x", task="mnli"), "takes 2 text"),
    (lambda o: o.vqa(IMG["a_200x150_rgb"], "q", mode="trie"), "needs a list"),
    (lambda o: o.run("dance", [{}]), "unknown task 'dance'"),
    (lambda o: o.caption(IMG["a_200x150_rgb"], beam_size=0), "beam_size"),
    (lambda o: o.caption(IMG["a_200x150_rgb"], bogus=1), "bogus"),
    (lambda o: o.classify_text("supercalifragilisticexpialidocious " * 600, task="cola"), "at most 1024"),
])
def test_bad_input_gives_one_line_error(ofa256, call, message):
    with pytest.raises(OFAError) as err:
        call(ofa256)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_image_size_beyond_the_position_table_is_refused_before_resizing(tiny_model):
    ofa = OFA(tiny_model, image_size=100_000)  # resizing to this would exhaust memory
    with pytest.raises(OFAError, match="image size 100000 is larger than .* cover \\(672 pixels a side\\)"):
        ofa.caption(IMG["a_200x150_rgb"])


def test_corrupt_image_is_named(ofa256, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(OFAError, match="broken.png"):
        ofa256.caption(str(bad))


def test_chinese_model_uses_chinese_prompts_and_bins():
    from openofa.config import get_config
    from openofa.model import build_model

    torch.manual_seed(0)
    cfg = get_config("tiny", vocab_size=30325, language="zh")
    ofa = OFA(build_model(cfg).eval(), image_size=256)
    assert ofa.tokenizer.language == "zh" and ofa.tokenizer.bin_0 == cfg.bin_0 == 29325
    ex = ofa.run("caption", [{"image": IMG["a_200x150_rgb"]}], max_len_b=3)[0]
    assert isinstance(ex["caption"], str)
    prompt = ofa.tokenizer.decode(_caption_source_ids(ofa))
    assert prompt.replace(" ", "") == "图片描述了什么内容?"
    box = ofa.ground(IMG["b_640x480_rgb"], "黄色的圆")
    assert box is not None and 0 <= box[0] <= box[2] <= 640 and 0 <= box[1] <= box[3] <= 480


def _caption_source_ids(ofa):
    from openofa.tasks import Caption

    return Caption().prepare(ofa, IMG["a_200x150_rgb"]).src


@pytest.mark.parametrize("call, message", [
    (lambda o: o.summarize(5), "summarize: text must be a string or a list of strings, got int"),
    (lambda o: o.summarize(["a", 5]), "summarize: input 1: text must be a string, got int"),
    (lambda o: o.run("caption", [{"img": "x.png"}]), "caption: input 0 has unknown field(s) img; expected image"),
    (lambda o: o.run("vqa", [{"image": "x.png"}]), "vqa: input 0 has no question; expected image, question"),
    (lambda o: o.run("caption", ["x.png"]), "caption: input 0 is a str; expected a dict with image"),
])
def test_inputs_that_do_not_fit_the_task_are_one_line_errors(ofa256, call, message):
    with pytest.raises(OFAError) as err:
        call(ofa256)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_every_method_takes_one_value_or_a_list(ofa256):
    """One image and several texts, several images and one text, or lists of one length; the
    answers follow the inputs as the batched run gives them."""
    a, b = IMG["a_200x150_rgb"], IMG["b_640x480_rgb"]
    texts = ["the dark box", "a circle"]
    both = ofa256.run("ground", [{"image": a, "text": t} for t in texts])
    assert ofa256.ground(a, texts) == [r["box"] for r in both]
    together = ofa256.ground([a, b], "the dark box")  # a batch of two against two batches of one
    for box, alone in zip(together, [ofa256.ground(a, "the dark box"), ofa256.ground(b, "the dark box")]):
        assert (box is None and alone is None) or box == pytest.approx(alone, rel=1e-5, abs=1e-4)
    assert len(ofa256.ground([a, b], texts)) == 2
    assert isinstance(ofa256.entail(a, "a box"), str)
    labels = ofa256.entail([a, b], ["a box", "a dog"], premise="a picture")
    assert labels == [r["label"] for r in ofa256.run("entail", [
        {"image": a, "hypothesis": "a box", "premise": "a picture"},
        {"image": b, "hypothesis": "a dog", "premise": "a picture"}])]
    assert len(ofa256.classify_text(["good film", "bad film"], task="sst2")) == 2
    assert len(ofa256.vqa([a, b], "what is it?", max_len_b=2)) == 2
    assert ofa256.caption([]) == []


@pytest.mark.parametrize("call, message", [
    (lambda o: o.ground([IMG["a_200x150_rgb"], IMG["b_640x480_rgb"]], ["x", "y", "z"]),
     "ground: lists of different lengths (2 images, 3 texts)"),
    (lambda o: o.vqa([IMG["a_200x150_rgb"]] * 3, ["q?", "r?"]), "vqa: lists of different lengths (3 images, 2 questions)"),
    (lambda o: o.entail([IMG["a_200x150_rgb"]] * 2, "h", premise=["p"]), "entail: lists of different lengths"),
    (lambda o: o.classify_text(["a", "b"], ["c"], task="mnli"), "classify-text: lists of different lengths"),
])
def test_lists_of_different_lengths_are_one_line_errors(ofa256, call, message):
    with pytest.raises(OFAError) as err:
        call(ofa256)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_grounding_decodes_only_ordered_boxes(ofa256, tiny_model):
    """Random weights emit inverted boxes freely; the default decoding prunes them (x2 > x1 and
    y2 > y1 in bins), the original's path (faithful) does not."""
    from openofa.tasks import Grounding

    cfg = tiny_model.config
    texts = ["a yellow circle", "the dark box", "left", "the man on the right", "sky", "two dogs", "red", "a b c"]
    task = Grounding()
    examples = [task.prepare(ofa256, image=IMG[n], text=t) for n in IMG for t in texts]
    rng = (cfg.bin_0, cfg.vocab_size)

    def bins(hypos):
        return [[int(t) - cfg.bin_0 for t in h.tokens[:4]] for h in hypos]

    with torch.inference_mode():
        plain = bins(ofa256.generate(examples, task.generation, task="ground", constraint_range=rng))
        ordered = bins(ofa256.generate(examples, task.generation, task="ground", constraint_range=rng,
                                       ordered_box=(cfg.bin_0, cfg.num_bins)))
    assert any(b[2] <= b[0] or b[3] <= b[1] for b in plain)  # the test can fail
    assert all(b[0] < b[2] and b[1] < b[3] for b in ordered)
    boxes = ofa256.ground([IMG[n] for n in IMG for _ in texts], texts * len(IMG))
    assert all(b is None or (b[0] <= b[2] and b[1] <= b[3]) for b in boxes)


@pytest.mark.parametrize("option, value, message", [
    ("sampling_topp", 2.0, "sampling_topp must be in (0, 1]"),
    ("sampling_topk", 0, "sampling_topk must be >= 1"),
])
def test_sampling_limits_out_of_range_are_refused(ofa256, option, value, message):
    with pytest.raises(OFAError, match=re.escape(message)):
        ofa256.caption(IMG["a_200x150_rgb"], sampling=True, **{option: value})


def test_a_model_runs_only_the_tasks_its_file_records(tiny_model):
    caption_file = OFA(tiny_model, image_size=256, task_settings={"_name": "caption"})
    assert caption_file.trained_tasks() == ["caption"]
    with pytest.raises(OFAError, match="this model was not trained for vqa .*any_task=True"):
        caption_file.vqa(IMG["a_200x150_rgb"], "what?")
    anyway = OFA(tiny_model, image_size=256, task_settings={"_name": "caption"}, any_task=True)
    assert isinstance(anyway.vqa(IMG["a_200x150_rgb"], "what?", max_len_b=2), str)
    assert OFA(tiny_model, task_settings={"_name": "unify_task"}).trained_tasks() is None  # pretrained: all
    assert OFA(tiny_model, task_settings={"tasks": ["ground", "detect"]}).trained_tasks() == ["ground", "detect"]


def test_words_outside_a_small_vocabulary():
    """The shipped model knows its scenes' words: candidates it cannot spell are refused (they
    would all score alike), inputs with unknown words are answered with a warning."""
    import openofa
    from openofa.errors import OFAWarning
    from openofa.mini.scenes import make_scene

    own = openofa.load(any_task=True)
    img = make_scene(0, (128, 128)).image
    with pytest.raises(OFAError, match="no word for classes 'cat', 'person': they read alike"):
        own.classify(img, ["cat", "person", "circle"])
    with pytest.raises(OFAError, match="no word for answers 'banana', 'car'"):
        own.vqa(img, "what color is the circle?", answers=["red", "banana", "car"])
    with pytest.warns(OFAWarning, match="reads answers 'a red car' with <unk>"):  # still told apart
        assert own.vqa(img, "what color is the circle?", answers=["red", "a red car"]) in ("red", "a red car")
    with pytest.warns(OFAWarning, match="does not know the word.s. zebra of the question"):
        assert isinstance(own.vqa(img, "is there a zebra?"), str)
    assert own.unknown_words("the red circle") == []
