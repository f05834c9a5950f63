"""Sample construction against the golden fixtures of the original implementation, and the
batch contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafiles import NAMES, b64, golden_preprocess, write_jsonl, write_tsv
from support import GOLDEN

from openofa.data import build_dataset, collate
from openofa.text import OFATokenizer

PAD, BOS, EOS = 1, 0, 2


@pytest.fixture(scope="module")
def tok():
    return OFATokenizer.from_language("en")


@pytest.fixture(scope="module")
def npz():
    return np.load(GOLDEN / "preprocess.npz")


def test_refcoco_samples_match_golden(tmp_path, npz):
    pre = golden_preprocess()["refcoco"]
    f = write_tsv(tmp_path / "refcoco_train.tsv",
                  [[n, 0, pre[n]["text"], pre[n]["box"], b64(n, urlsafe=True)] for n in NAMES])
    ds = build_dataset("refcoco", f, split="train")
    for i, n in enumerate(NAMES):
        s, g = ds[i], pre[n]
        assert s["source"].tolist() == g["source_ids"]
        assert s["target"].tolist() == g["target_ids"]
        assert s["prev_output_tokens"].tolist() == g["prev_output_ids"]
        assert s["w_resize_ratio"] == g["w_resize_ratio"] and s["h_resize_ratio"] == g["h_resize_ratio"]
        assert list(s["patch_image"].shape) == g["patch_image_shape"]
        assert torch.equal(s["patch_image"], torch.from_numpy(npz[f"refcoco512/{n}"]))
    batch = ds.collater([ds[i] for i in range(3)])
    assert batch["region_coords"].shape == (3, 4) and batch["w_resize_ratio"].dtype == torch.float32
    assert batch["ref"][0] == [20.0, 30.0, 80.0, 100.0]


def test_refcoco_prompt_as_decoder_prefix(tmp_path):
    # our small model's option: the grounding prompt goes to the decoder too, bins after it
    pre = golden_preprocess()["refcoco"]
    n = NAMES[0]
    f = write_tsv(tmp_path / "refcoco_train.tsv", [[n, 0, pre[n]["text"], pre[n]["box"], b64(n, urlsafe=True)]])
    plain = build_dataset("refcoco", f, split="train")[0]
    s = build_dataset("refcoco", f, split="train", prompt_type="prev_output")[0]
    src, bins = plain["source"].tolist(), plain["target"].tolist()[:-1]
    assert len(bins) == 4 and s["source"].tolist() == src
    assert s["prev_output_tokens"].tolist() == src[:-1] + bins
    assert s["target"].tolist() == [PAD] * (len(src) - 2) + bins + [EOS]
    assert s["prefix"].tolist() == src[1:-1]
    assert torch.equal(s["patch_image"], plain["patch_image"])


def _caption_file(tmp_path):
    cap = golden_preprocess()["caption"]
    rows = [[i, 100 + i, cap["captions"][n], "", b64(n)] for i, n in enumerate(cap["batch_order"])]
    return write_tsv(tmp_path / "caption.tsv", rows)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_caption_batch_matches_golden_evaluation_split(tmp_path, npz, split):
    ds = build_dataset("caption", _caption_file(tmp_path), split=split, patch_image_size=384)
    batch = ds.collater([ds[i] for i in range(len(ds))])
    net = batch["net_input"]
    for key in ("src_tokens", "src_lengths", "prev_output_tokens", "patch_images", "patch_masks"):
        assert torch.equal(net[key], torch.from_numpy(npz[f"caption384_batch/{key}"])), key
    assert torch.equal(batch["target"], torch.from_numpy(npz["caption384_batch/target"]))
    assert batch["ntokens"] == int((batch["target"] != PAD).sum()) == 8 + 9 + 6
    assert batch["ref"][2] == ["grey waves", "second caption"]


def test_caption_training_split_normalises_the_target(tmp_path, npz, tok):
    """Training drops punctuation (the '&&' too) and keeps case; the evaluation split keeps the
    '&&'-separated references. The golden batch is the evaluation form."""
    ds = build_dataset("caption", _caption_file(tmp_path), split="train", patch_image_size=384)
    batch = ds.collater([ds[i] for i in range(3)])
    gold = torch.from_numpy(npz["caption384_batch/target"])
    assert torch.equal(batch["target"][:2], gold[:2])  # no '&&' in these: same ids
    third = tok.encode(" grey waves second caption")
    assert batch["target"][2].tolist() == third + [EOS] + [PAD] * (9 - len(third) - 1)
    assert batch["net_input"]["prev_output_tokens"][2, : len(third) + 1].tolist() == [BOS] + third
    short = build_dataset("caption", _caption_file(tmp_path), split="train", patch_image_size=384,
                          max_tgt_length=2)
    assert short[1]["target"].tolist() == tok.encode(" a yellow") + [EOS]


def test_batch_contract(tmp_path):
    ds = build_dataset("caption", _caption_file(tmp_path), split="train", patch_image_size=64)
    batch = collate([ds[0], ds[2]], pad=1)
    assert batch["id"] == ["0", "2"] and batch["nsentences"] == 2
    net = batch["net_input"]
    assert set(net) == {"src_tokens", "src_lengths", "patch_images", "patch_masks", "prev_output_tokens"}
    assert net["src_tokens"].dtype == torch.long and net["src_lengths"].tolist() == [8, 8]
    assert net["patch_images"].shape == (2, 3, 64, 64) and net["patch_images"].dtype == torch.float32
    assert net["patch_masks"].dtype == torch.bool and net["patch_masks"].tolist() == [True, True]
    tgt, prev = batch["target"], net["prev_output_tokens"]
    assert tgt.shape == prev.shape and tgt.dtype == torch.long
    assert isinstance(batch["ntokens"], int) and batch["ntokens"] == int(tgt.ne(PAD).sum())
    # right padding with 1, target = ids + eos, prev = bos + ids
    for row in range(2):
        n = int(tgt[row].ne(PAD).sum())
        assert tgt[row, n - 1] == EOS and (tgt[row, n:] == PAD).all()
        assert prev[row, 0] == BOS and torch.equal(prev[row, 1:n], tgt[row, : n - 1])
    assert collate([]) == {}


def test_vqa_prompt_types_and_conf(tmp_path, tok):
    f = write_tsv(tmp_path / "vqa.tsv", [
        ["q1", 5, "What colour is the square", "0.6|!+red&&1.0|!+dark red&&1.0|!+crimson", "square&&circle",
         b64("a_200x150_rgb")],
    ])
    s = build_dataset("vqa", f, patch_image_size=32)[0]  # official: prev_output prompt, objects on
    ids = tok.encode(" what colour is the square?") + tok.encode(" object: square circle")
    src = [BOS] + ids + [EOS]
    ans = tok.encode(" dark red")  # highest confidence, first among equals
    assert s["source"].tolist() == src
    assert s["prev_output_tokens"].tolist() == src[:-1] + ans
    assert s["target"].tolist() == [PAD] * (len(src) - 2) + ans + [EOS]
    assert s["prefix"].tolist() == src[1:-1]
    assert s["conf"] == 1.0 and s["ref"] == {"red": 0.6, "dark red": 1.0, "crimson": 1.0}

    s = build_dataset("vqa", f, patch_image_size=32, prompt_type="none", add_object=False)[0]
    assert s["source"].tolist() == [BOS] + tok.encode(" what colour is the square?") + [EOS]
    assert s["prev_output_tokens"].tolist() == [BOS] + ans and s["target"].tolist() == ans + [EOS]
    s = build_dataset("vqa", f, patch_image_size=32, prompt_type="src", add_object=False)[0]
    src = [BOS] + tok.encode(" what colour is the square?") + [EOS]
    assert s["prev_output_tokens"].tolist() == src + ans
    assert s["target"].tolist() == [PAD] * (len(src) - 1) + ans + [EOS]

    batch = collate([build_dataset("vqa", f, patch_image_size=32)[0]] * 2)
    assert batch["conf"].tolist() == [1.0, 1.0] and batch["ntokens"] == 2 * (len(ans) + 1)


def test_snli_ve_with_and_without_premise(tmp_path, tok):
    f = write_tsv(tmp_path / "ve.tsv", [[1, 9, b64("a_200x150_rgb"), "Two shapes.", "A square, a circle", "neutral"]])
    s = build_dataset("snli_ve", f, patch_image_size=32)[0]
    src = [BOS] + tok.encode(' can image and text1 " a square, a circle " imply text2 " two shapes. "?') + [EOS]
    lab = tok.encode(" maybe")
    assert s["source"].tolist() == src
    assert s["prev_output_tokens"].tolist() == src[:-1] + lab
    assert s["target"].tolist() == [PAD] * (len(src) - 2) + lab + [EOS]
    s = build_dataset("snli_ve", f, patch_image_size=32, add_caption=False)[0]
    assert s["source"].tolist() == [BOS] + tok.encode(' does the image describe " two shapes. "?') + [EOS]


def test_glue_src_prompt_target_is_the_label_only(tmp_path, tok):
    f = write_tsv(tmp_path / "mnli.tsv", [["A  man Sleeps", "A person rests", 2]])
    s = build_dataset("mnli", f)[0]
    src = [BOS] + tok.encode(' can text1 " a man sleeps " imply text2 " a person rests "?') + [EOS]
    assert s["source"].tolist() == src and s["patch_image"] is None
    assert s["prev_output_tokens"].tolist() == src
    assert s["target"].tolist() == [PAD] * (len(src) - 1) + tok.encode(" no")  # no eos for GLUE
    assert s["prefix"].tolist() == src[1:]
    batch = collate([s, s])
    assert batch["ntokens"] == 2 and batch["net_input"]["patch_images"] is None
    assert batch["net_input"]["patch_masks"] is None
    s = build_dataset("mnli", f, prompt_type="none")[0]
    assert s["prev_output_tokens"].tolist() == [BOS] and s["target"].tolist() == tok.encode(" no")


def test_classification_train_augmentation_and_eval_transform(tmp_path, tok):
    f = write_tsv(tmp_path / "imagenet.tsv", [[b64("b_640x480_rgb"), 3, "goldfish, Carassius auratus"]])
    s = build_dataset("classify", f, split="valid", patch_image_size=48)[0]
    assert s["source"].tolist() == [BOS] + tok.encode(" what does the image describe?") + [EOS]
    assert s["target"].tolist() == tok.encode(" goldfish, Carassius auratus") + [EOS]
    again = build_dataset("classify", f, split="valid", patch_image_size=48)[0]
    assert torch.equal(s["patch_image"], again["patch_image"])  # evaluation: deterministic resize
    train = build_dataset("classify", f, split="train", patch_image_size=48)
    torch.manual_seed(0)
    a = train[0]["patch_image"]
    b = train[0]["patch_image"]
    assert a.shape == b.shape == (3, 48, 48) and not torch.equal(a, b)  # random crop / flip / augment
    plain = build_dataset("classify", f, split="train", patch_image_size=48, train_augment=False)[0]
    assert torch.equal(plain["patch_image"], s["patch_image"])


def test_summary_noise_only_in_training(tmp_path, tok):
    f = write_jsonl(tmp_path / "giga.jsonl", [{"text": "Police <unk> said on Monday", "summary": "Police say x"}])
    clean = build_dataset("gigaword", f, split="valid", noise_ratio=0.9)[0]
    tgt = tok.encode("police say x")  # no leading space, as the original encodes the summary
    assert clean["source"].tolist() == [BOS] + tok.encode(
        ' what is the summary of article " police unk said on monday "?') + [EOS]
    assert clean["target"].tolist() == tgt + [EOS] and clean["prev_output_tokens"].tolist() == [BOS] + tgt
    torch.manual_seed(0)
    noisy = build_dataset("gigaword", f, split="train", noise_ratio=0.9)[0]
    assert noisy["target"].tolist() == tgt + [EOS]
    assert noisy["prev_output_tokens"].tolist() != [BOS] + tgt
    assert clean["ref"] == "police say x"
