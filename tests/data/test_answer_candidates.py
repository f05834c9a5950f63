"""Closed answer lists: the files they come from, the constraint masks of training targets, and
how those masks are batched."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from datafiles import b64, write_jsonl, write_tsv

from openofa.data import build_dataset, collate
from openofa.data.answers import CandidateAnswers, read_answers
from openofa.data.records import BadRow
from openofa.errors import OFAError
from openofa.text import OFATokenizer

PAD, BOS, EOS = 1, 0, 2


@pytest.fixture(scope="module")
def tok():
    return OFATokenizer.from_language("en")


def allowed(mask_row: torch.Tensor) -> set[int]:
    return set(mask_row.nonzero().flatten().tolist())


def test_answer_list_formats(tmp_path):
    want = ["red", "red car", "blue"]
    (tmp_path / "a.txt").write_text("red\n\nred car\nblue\n")
    (tmp_path / "a.tsv").write_text("red\t0\nred car\t1\nblue\t2\n")
    (tmp_path / "a.json").write_text(json.dumps({"red": 0, "red car": 1, "blue": 2}))
    (tmp_path / "b.json").write_text(json.dumps(want))
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"red": 0, "red car": 1, "blue": 2}))
    for name in ("a.txt", "a.tsv", "a.json", "b.json", "a.pkl"):
        assert read_answers(tmp_path / name) == want, name


def test_bad_answer_lists_are_one_line_errors(tmp_path):
    (tmp_path / "dup.txt").write_text("red\nblue\nred\n")
    with pytest.raises(OFAError, match=r"dup\.txt:3: answer 'red' repeats .*dup\.txt:1"):
        read_answers(tmp_path / "dup.txt")
    (tmp_path / "bad.json").write_text('{"red": 0,\n "blue" 1}')
    with pytest.raises(OFAError, match=r"bad\.json:2: not valid JSON"):
        read_answers(tmp_path / "bad.json")
    (tmp_path / "num.json").write_text("[\"red\", 3]")
    with pytest.raises(OFAError, match=r"num\.json: answer 2: 3 is not a string"):
        read_answers(tmp_path / "num.json")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"red": torch.Size([1])}))
    with pytest.raises(OFAError, match=r"evil\.pkl: not a pickled answer dictionary"):
        read_answers(tmp_path / "evil.pkl")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(OFAError, match=r"empty\.txt: no answers"):
        read_answers(tmp_path / "empty.txt")
    with pytest.raises(OFAError, match="answer list not found"):
        read_answers(tmp_path / "missing.txt")
    with pytest.raises(OFAError) as e:
        read_answers(tmp_path / "bad.json")
    assert "\n" not in str(e.value)


def test_masks_follow_the_trie_of_the_candidates(tok):
    cands = CandidateAnswers(["red", "red car", "blue"], tok)
    red, car, blue = tok.encode(" red") + tok.encode(" car") + tok.encode(" blue")
    assert tok.encode(" red car") == [red, car]
    # a target with three padded prompt positions, then "red car" + eos
    target = torch.tensor([PAD, PAD, PAD, red, car, EOS])
    m = cands.target_mask(target, "f:1")
    assert m.shape == (6, len(tok))
    assert [allowed(m[i]) for i in range(6)] == [set(), set(), set(), {red, blue}, {car, EOS}, {EOS}]
    m = cands.target_mask(torch.tensor([red, EOS]))
    assert [allowed(r) for r in m] == [{red, blue}, {car, EOS}]
    m = cands.target_mask(torch.tensor([blue, EOS]))
    assert [allowed(r) for r in m] == [{red, blue}, {EOS}]
    with pytest.raises(BadRow, match=r"f:7: the target answer is not in the candidate list") as e:
        cands.target_mask(torch.tensor([PAD, car, EOS]), "f:7")
    assert e.value.kind == "answers"
    with pytest.raises(BadRow, match="not in the candidate list"):  # "blue car" leaves the trie
        cands.target_mask(torch.tensor([blue, car, EOS]), "f:8")


def vqa_file(tmp_path, answers):
    rows = [[f"q{i}", 5, "What colour is the car", f"1.0|!+{a}", "car", b64("a_200x150_rgb")]
            for i, a in enumerate(answers)]
    return write_tsv(tmp_path / "vqa.tsv", rows)


def test_vqa_samples_and_batches_carry_the_masks(tmp_path, tok):
    (tmp_path / "ans.txt").write_text("red\nred car\nblue\n")
    f = vqa_file(tmp_path, ["red car", "blue", "green"])
    ds = build_dataset("vqa", f, patch_image_size=32, ans2label_file=str(tmp_path / "ans.txt"), on_error="skip")
    red, car, blue = tok.encode(" red")[0], tok.encode(" car")[0], tok.encode(" blue")[0]
    s0, s1 = ds[0], ds[1]
    n_prompt = len(s0["target"]) - 3  # prompt positions are pad in the target (prev_output prompt)
    assert s0["target"][n_prompt:].tolist() == [red, car, EOS]
    assert not s0["constraint_mask"][:n_prompt].any()
    assert [allowed(r) for r in s0["constraint_mask"][n_prompt:]] == [{red, blue}, {car, EOS}, {EOS}]
    assert [allowed(r) for r in s1["constraint_mask"][-2:]] == [{red, blue}, {EOS}]
    # "green" is not a candidate: a bad row of kind "answers", skipped and counted
    assert ds[2].kind == "answers" and "vqa.tsv:3" in ds[2].message
    batch = collate([s0, s1, ds[2]])
    masks = batch["constraint_masks"]
    assert masks.shape == (*batch["target"].shape, len(tok)) and batch["skipped"] == 1
    assert torch.equal(masks[0], s0["constraint_mask"])
    width = len(s1["target"])
    assert torch.equal(masks[1, :width], s1["constraint_mask"]) and not masks[1, width:].any()
    # every non-pad target token is allowed by its mask, no pad position has one
    tgt = batch["target"]
    assert masks.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).eq(tgt.ne(PAD)).all()
    with pytest.raises(BadRow, match=r"vqa\.tsv:3: the target answer is not in the candidate list"):
        build_dataset("vqa", f, patch_image_size=32, ans2label_dict=["red", "blue"])[2]


def test_other_tasks_and_bad_options(tmp_path, tok):
    f = write_tsv(tmp_path / "mnli.tsv", [["a man sleeps", "a person rests", 1]])
    s = build_dataset("mnli", f, ans2label_dict={"maybe": 0, "yes": 1, "no": 2})[0]
    first = {tok.encode(" " + a)[0] for a in ("maybe", "yes", "no")}
    assert allowed(s["constraint_mask"][-1]) == first and not s["constraint_mask"][:-1].any()
    cap = write_jsonl(tmp_path / "cap.jsonl", [{"image": "x.png", "caption": "a car"}])
    with pytest.raises(OFAError, match="applies to vqa, .* not to task caption"):
        build_dataset("caption", cap, ans2label_dict=["a"])
    with pytest.raises(OFAError, match="not both"):
        build_dataset("mnli", f, ans2label_dict=["yes"], ans2label_file="x.txt")
    with pytest.raises(OFAError, match=r"True is not a string \(in YAML, quote"):
        build_dataset("mnli", f, ans2label_dict=[True, False])
    with pytest.raises(OFAError, match="answer list not found: .*nope.txt"):
        build_dataset("vqa", f, ans2label_file=str(tmp_path / "nope.txt"))
