"""Samples of the four pretraining files: image-text pairs with matching and grounded captioning,
text infilling, image infilling and detection."""

from __future__ import annotations

import base64
import io
import json
import random

import pytest
import torch
from datafiles import b64, write_tsv

from openofa.data import build_dataset, collate
from openofa.data.pretrain import PRETRAIN_PROMPTS, NegativeSamples, TextInfilling, word_starts
from openofa.data.records import BadRow
from openofa.errors import OFAError
from openofa.text import OFATokenizer
from openofa.text.locations import box_to_ids

PAD, BOS, EOS = 1, 0, 2


@pytest.fixture(scope="module")
def tok():
    return OFATokenizer.from_language("en")


@pytest.fixture()
def negatives(tmp_path):
    folder = tmp_path / "negative_sample"
    folder.mkdir()
    (folder / "object.txt").write_text("cat\ntree\nbus\n")
    (folder / "all_captions.txt").write_text("a tree in a field\ntwo cats sleeping\n")
    (folder / "type2ans.json").write_text(json.dumps({"other": ["red", "blue", "green"],
                                                      "how many": ["1", "2", "3"]}))
    return folder


def vl_file(tmp_path):
    img = b64("a_200x150_rgb")
    return write_tsv(tmp_path / "vision_language_examples.tsv", [
        [1, img, "A dog on a sofa", "", "", "dog&&sofa", "coco", "caption"],
        [2, img, "", "How many dogs", "1.0|!+2&&0.5|!+3", "", "vqa", "qa"],
        [3, b64("b_640x480_rgb"), "the left dog", "", "10,20,300,400", "", "refcoco", "visual_grounding"],
        [4, img, "A dog on a sofa", "", "", "", "cc12m", "caption"],
    ])


def ids(t):
    return t.tolist()


def test_caption_pairs_and_image_text_matching(tmp_path, tok, negatives):
    f = vl_file(tmp_path)
    ds = build_dataset("pretrain_vl", f, neg_sample_dir=str(negatives), patch_image_size=64)
    seen = {}
    for seed in range(12):
        random.seed(seed)
        pair, match = ds[0]
        assert ids(pair["source"]) == [BOS] + tok.encode(PRETRAIN_PROMPTS["caption"]) + [EOS]
        assert ids(pair["target"]) == tok.encode(" a dog on a sofa") + [EOS] and pair["conf"] == 1.0
        assert pair["patch_image"].shape == (3, 64, 64) and torch.equal(match["patch_image"], pair["patch_image"])
        answer = tok.decode(match["target"]).strip()
        shown = tok.decode(match["source"])
        seen.setdefault(answer, []).append(shown)
        assert ids(match["prev_output_tokens"]) == [BOS] + ids(match["target"])[:-1]
    assert set(seen) == {"yes", "no"}  # both kinds come up
    assert all(s == PRETRAIN_PROMPTS["caption_match"].format("a dog on a sofa") for s in seen["yes"])
    for s in seen["no"]:  # another caption, or one ground-truth object swapped for another object
        assert s != PRETRAIN_PROMPTS["caption_match"].format("a dog on a sofa")
        assert any(x in s for x in ("tree in a field", "two cats", "a cat on", "a dog on a cat", "a tree on",
                                    "a bus on", "a dog on a bus", "a dog on a tree"))
    # validation rows, and rows without negatives, give the pair only
    assert len(build_dataset("pretrain_vl", f, split="valid", neg_sample_dir=str(negatives),
                             patch_image_size=64)[0]) == 1
    plain = build_dataset("pretrain_vl", f, patch_image_size=64)
    assert len(plain[0]) == 1
    (cc12m,) = plain[3]
    assert ids(cc12m["target"])[:2] == [PAD, PAD]  # the original skips the first two tokens of cc12m


def test_questions_and_negative_answers(tmp_path, tok, negatives):
    ds = build_dataset("pretrain_vl", vl_file(tmp_path), neg_sample_dir=str(negatives), patch_image_size=64)
    random.seed(3)
    pair, match = ds[1]
    assert ids(pair["source"]) == [BOS] + tok.encode(" how many dogs") + [EOS]
    assert ids(pair["target"]) == tok.encode(" 2") + [EOS] and pair["conf"] == 1.0
    assert match["conf"] == 1.0 and tok.decode(match["target"]).strip() in ("yes", "no")
    neg = NegativeSamples.load(negatives)
    random.seed(0)
    drawn = {neg.answer("2", 1.0) for _ in range(200)}
    assert "2" not in drawn and drawn <= {"1", "3", "red", "blue", "green"} and {"1", "3"} <= drawn
    drawn = {neg.answer("purple", 1.0) for _ in range(50)}  # no type: an 'other' answer
    assert drawn <= {"red", "blue", "green"}


def test_grounding_and_grounded_captioning(tmp_path, tok):
    ds = build_dataset("pretrain_vl", vl_file(tmp_path), patch_image_size=64, train_augment=False)
    box, region = ds[2]
    # without the random augmentation: the 640x480 image resized to 64x64; the box scaled with it
    # and quantised over max_image_size 512
    scaled = [10 * 64 / 640, 20 * 64 / 480, 300 * 64 / 640, 400 * 64 / 480]
    bins = [int(i) for i in box_to_ids(scaled, vocab_size=len(tok), num_bins=1000, max_image_size=512)]
    assert ids(box["target"]) == bins + [EOS]
    assert ids(box["source"]) == [BOS] + tok.encode(PRETRAIN_PROMPTS["grounding"].format("the left dog")) + [EOS]
    assert ids(region["source"]) == [BOS] + tok.encode(PRETRAIN_PROMPTS["region"]) + bins + [EOS]
    assert ids(region["target"]) == tok.encode(" the left dog") + [EOS]
    batch = collate([ds[2], ds[1]])  # the rows' samples become separate batch rows
    assert batch["nsentences"] == 3 and batch["net_input"]["src_tokens"].shape[0] == 3
    bad = write_tsv(tmp_path / "bad.tsv", [[5, b64("a_200x150_rgb"), "x", "", "10,20,300,400", "", "r",
                                            "visual_grounding"]])
    with pytest.raises(BadRow, match=r"bad\.tsv:1: .*box"):
        build_dataset("pretrain_vl", bad, patch_image_size=64)[0]


def test_word_starts(tok):
    starts = word_starts(tok)
    assert starts.shape == (len(tok),)
    pieces = tok.encode(" xylophonist")
    assert len(pieces) > 1 and starts[pieces[0]] and not starts[pieces[1:]].any()
    assert starts[tok.encode(" dog")[0]] and starts[:4].all() and starts[tok.mask:].all()


class Fixed:
    """A span-length "distribution" that answers ``lengths`` (then ones) instead of drawing."""

    def __init__(self, *lengths):
        self.lengths = list(lengths)

    def sample(self, shape):
        n = shape[0]
        out, self.lengths = (self.lengths + [1] * n)[:n], self.lengths[n:]
        return torch.tensor(out, dtype=torch.long)


def test_text_infilling_masks_whole_words(tok):
    text = " the xylophonist quick fox jumps over a riverbank lazy dog"
    body = tok.encode(text)
    tokens = torch.tensor([BOS] + body + [EOS])
    starts = word_starts(tok)
    n_words = int(starts[torch.tensor(body)].sum())
    assert n_words == 10
    infill = TextInfilling(tok)
    infill.span_lengths = Fixed(1)  # every span one word: ceil(0.3 * 10) = 3 words become 3 masks
    torch.manual_seed(0)
    out = infill(tokens).tolist()
    assert out[0] == BOS and out[-1] == EOS and out.count(tok.mask) == 3
    # undo: each mask stands for exactly one whole word of the original
    words, cur = [], []
    for t in body:
        if starts[t] and cur:
            words.append(cur)
            cur = []
        cur.append(t)
    words.append(cur)
    kept = out[1:-1]
    rebuilt, i = [], 0
    for w in words:
        if kept[i] == tok.mask:
            rebuilt.append(None)
            i += 1
        else:
            assert kept[i: i + len(w)] == w
            rebuilt.append(w)
            i += len(w)
    assert i == len(kept) and rebuilt.count(None) == 3
    # two zero-length spans insert a mask each, then three one-word spans
    infill.span_lengths = Fixed(0, 0)
    out = infill(tokens).tolist()
    assert out.count(tok.mask) == 5 and out[0] == BOS and out[-1] == EOS
    rest, it = [t for t in out if t != tok.mask], iter(tokens.tolist())
    assert all(any(t == u for u in it) for t in rest)  # what is left keeps the original order
    # spans of two words: the budget of 3 words is a 2-word span and a 1-word span (two masks,
    # unless the spans touch)
    infill.span_lengths = Fixed(2, 2)
    out = infill(tokens).tolist()
    assert 1 <= out.count(tok.mask) <= 2 and len(out) <= len(tokens) - 1


def test_text_infilling_sample(tmp_path, tok):
    f = write_tsv(tmp_path / "text_examples.tsv", [[7, "The QUICK brown fox jumps over the lazy dog " * 3]])
    torch.manual_seed(1)
    s = build_dataset("pretrain_text", f)[0]
    text = ("the quick brown fox jumps over the lazy dog " * 3).strip()
    assert ids(s["target"]) == tok.encode(" " + text) + [EOS] and s["conf"] == 2.0
    assert s["patch_image"] is None
    prefix = tok.encode(PRETRAIN_PROMPTS["text"])
    src = ids(s["source"])
    assert src[:len(prefix) - 1] == [BOS] + prefix[:-2] and src[-3:] == prefix[-2:] + [EOS]
    assert tok.mask in src and len(src) < len(prefix) + 2 + len(tok.encode(" " + text))
    with pytest.raises(OFAError, match="mask_ratio"):
        build_dataset("pretrain_text", f, mask_ratio=1.5)


def png_b64(size, color=(200, 10, 10)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_image_infilling(tmp_path, tok):
    codes = list(range(0, 8192, 32))  # 256 codes: the 16 x 16 grid of the centre
    f = write_tsv(tmp_path / "image_examples.tsv", [[5, png_b64((256, 256)), " ".join(map(str, codes))],
                                                    [6, png_b64((256, 256)), "1 2 9000"]])
    ds = build_dataset("pretrain_image", f, on_error="skip")
    s = ds[0]
    img = s["patch_image"]
    assert img.shape == (3, 256, 256)
    assert not img[:, 64:192, 64:192].any() and img[:, :64].abs().min() > 0 and img[:, 192:].abs().min() > 0
    first_code = len(tok) - 8192 - 1000
    assert ids(s["target"]) == [first_code + c for c in codes] + [EOS] and s["code_mask"] and s["conf"] == 2.0
    assert tok.decode(s["target"][:2]) == "<code_0><code_32>"
    assert ds[1].kind == "field" and "image code 9000 is outside 0..8191" in ds[1].message
    batch = collate([s, s])
    assert batch["net_input"]["code_masks"].tolist() == [True, True]


def test_detection(tmp_path, tok):
    f = write_tsv(tmp_path / "detection_examples.tsv", [
        [9, b64("b_640x480_rgb"), "10,20,300,400,1,dog&&320,0,640,240,2,traffic light&&700,10,800,20,3,cat"],
        [10, b64("b_640x480_rgb"), "300,20,10,400,1,dog"],
    ])
    ds = build_dataset("pretrain_detection", f, on_error="skip", train_augment=False)
    s = ds[0]
    assert s["patch_image"].shape == (3, 256, 256) and s["conf"] == 2.0
    want = []
    for box, name in (((10, 20, 300, 400), "dog"), ((320, 0, 640, 240), "traffic light")):
        scaled = [box[0] * 256 / 640, box[1] * 256 / 480, box[2] * 256 / 640, box[3] * 256 / 480]
        want += [int(i) for i in box_to_ids(scaled, vocab_size=len(tok), num_bins=1000, max_image_size=512)]
        want += tok.encode(" " + name)
    assert ids(s["target"]) == want + [EOS]  # the box outside the image is left out
    assert ids(s["source"]) == [BOS] + tok.encode(PRETRAIN_PROMPTS["detection"]) + [EOS]
    assert ds[1].kind == "box" and "inverted" in ds[1].message
    # with the same image size, all four kinds batch together (text rows get an empty image)
    text = write_tsv(tmp_path / "text_examples.tsv", [[1, "a plain sentence about dogs and cats"]])
    image = write_tsv(tmp_path / "image_examples.tsv", [[5, png_b64((256, 256)), "1 2 3"]])
    vl = build_dataset("pretrain_vl", vl_file(tmp_path), patch_image_size=256)
    batch = collate([vl[0], build_dataset("pretrain_text", text)[0], build_dataset("pretrain_image", image)[0], s])
    net = batch["net_input"]
    assert net["patch_images"].shape == (4, 3, 256, 256)
    assert net["patch_masks"].tolist() == [True, False, True, True]
    assert net["code_masks"].tolist() == [False, False, True, False]
    assert batch["conf"].tolist() == [1.0, 2.0, 2.0, 2.0]  # the original's weights


def test_bad_negative_folders(tmp_path, negatives):
    with pytest.raises(OFAError, match="neg_sample_dir: no such folder"):
        NegativeSamples.load(tmp_path / "none")
    (negatives / "type2ans.json").write_text('{"how many": ["1", "2"]}')
    with pytest.raises(OFAError, match=r"type2ans\.json: needs an 'other' list"):
        NegativeSamples.load(negatives)
    (negatives / "object.txt").write_text("cat\n")
    with pytest.raises(OFAError, match=r"object\.txt: need at least two entries"):
        NegativeSamples.load(negatives)
    with pytest.raises(OFAError, match="neg_sample_dir applies to pretrain_vl"):
        build_dataset("pretrain_text", vl_file(tmp_path), neg_sample_dir=str(negatives))
