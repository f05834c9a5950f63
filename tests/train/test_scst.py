"""Self-critical sequence training: CIDEr-D rewards, leave-one-out advantages, the loss against an
independent teacher-forced scoring, the direction of an update, and a run from a recipe."""

from __future__ import annotations

import math
import pickle
from collections import defaultdict

import pytest
import torch

from openofa.errors import OFAError
from openofa.generation import score_candidates
from openofa.mini.scenes import write_dataset
from openofa.train.recipe import TrainConfig
from openofa.train.scst import CiderReward, SelfCriticalCriterion, leave_one_out_advantages, reward_text

CORPUS = [["a red car"], ["a blue bus"]]


def flat(groups):
    return [x for g in groups for x in g]


def test_reward_text_is_the_originals_wrapping():
    assert reward_text("  a red car. ") == "a red car <eos>"
    assert reward_text("A man, riding!") == "A man riding <eos>"  # case is kept, as in the original


def test_cider_rewards_by_hand():
    reward = CiderReward.from_references(CORPUS)
    assert reward.num_docs == 2
    got = reward([["a red car", "a red bus", "dog"]], [["a red car"]])[0]
    # with two documents every n-gram seen in one of them (or in none) weighs log 2 and "a" /
    # "<eos>" weigh 0. "a red bus <eos>" against "a red car <eos>": unigram cosine 1/2 (red),
    # bigram 1/3 ("a red" of three), no common 3- or 4-gram, equal lengths -> 10 * (1/2 + 1/3) / 4
    assert got == pytest.approx([10.0, 10 * (0.5 + 1 / 3) / 4, 0.0], abs=1e-9)
    # several references: the mean over them
    two = reward([["a red car"]], [["a red car", "a blue bus"]])[0][0]
    assert two == pytest.approx((10.0 + 0.0) / 2, abs=1e-9)


def test_document_frequencies_from_the_batch_or_the_originals_file(tmp_path):
    corpus = CiderReward.from_references(CORPUS)
    caps, refs = [["a red bus", "a red car"], ["a blue car"]], [["a red car"], ["a blue bus"]]
    # batch mode counts over the images of the call: here the same two documents
    assert flat(CiderReward()(caps, refs)) == pytest.approx(flat(corpus(caps, refs)))
    # one image alone: every n-gram is in every document, so every weight and reward is 0
    assert CiderReward()([["a red car"]], [["a red car"]]) == [[0.0]]
    df = defaultdict(float, {k: float(v) for k, v in corpus.df.items()})
    path = tmp_path / "coco-train-words.p"
    path.write_bytes(pickle.dumps({"document_frequency": df, "ref_len": 2.0}, protocol=2))
    assert flat(CiderReward.from_file(path)(caps, refs)) == pytest.approx(flat(corpus(caps, refs)))
    path.write_bytes(pickle.dumps({"document_frequency": df, "ref_len": torch.tensor(2.0)}))
    with pytest.raises(OFAError, match="not a cached CIDEr document-frequency file"):
        CiderReward.from_file(path)
    with pytest.raises(OFAError, match="no such file"):
        CiderReward.from_file(tmp_path / "missing.p")


def test_leave_one_out_advantages_by_hand():
    adv = leave_one_out_advantages([[10.0, 0.0, 4.0], [3.0], [1.0, 1.0], [5.0, 1.0]])
    assert adv == [[8.0, -7.0, -1.0], [0.0], [0.0, 0.0], [4.0, -4.0]]
    for group in adv:
        assert sum(group) == pytest.approx(0.0)  # the baseline removes the group's common part


def scenes_caption(tmp_path, n=3, seed=700):
    files = write_dataset(tmp_path, n=n, seed=seed, size=(96, 96))
    return files["caption"]


def mini_tokenizer():
    from openofa.config import get_config
    from openofa.text.tokenizer import OFATokenizer

    return OFATokenizer.for_config(get_config("mini"))


def small_model(seed=0):
    from openofa.config import get_config
    from openofa.model import build_model

    torch.manual_seed(seed)
    cfg = get_config("mini", encoder_layers=1, decoder_layers=1, dropout=0.0, attention_dropout=0.0)
    return build_model(cfg).eval()


def caption_batch(tmp_path, n=2):
    from openofa.data import build_dataset

    ds = build_dataset("caption", scenes_caption(tmp_path, n=n), patch_image_size=64, scst=True,
                       tokenizer=mini_tokenizer())
    return ds.collater([ds[i] for i in range(n)])


class IndexReward:
    """Reward by position in the image's group (the policy gradient alone, without CIDEr)."""

    def __init__(self, values):
        self.values = values

    def __call__(self, captions, refs):
        return [[self.values[j] for j in range(len(g))] for g in captions]


def test_loss_is_minus_advantage_times_the_captions_log_probability(tmp_path):
    model = small_model()
    batch = caption_batch(tmp_path)
    crit = SelfCriticalCriterion({"beam_size": 3, "max_len_b": 5}, IndexReward([3.0, 1.0, 2.0]),
                                 tokenizer=mini_tokenizer())
    captions = crit.sample(model, batch)
    assert [len(g) for g in captions] == [3, 3] and all(int(c[-1]) == 2 for g in captions for c in g)
    out = crit(model, batch)
    net = batch["net_input"]
    # the shared teacher-forced scorer (eos appended by it) gives each caption's log-probability
    scores = score_candidates(model, net["src_tokens"], [[c[:-1] for c in g] for g in captions],
                              net["src_lengths"], net["patch_images"], net["patch_masks"])
    adv = [3.0 - 1.5, 1.0 - 2.5, 2.0 - 2.0]  # each reward minus the mean of the other two
    expected = -sum(a * float(s) for group in scores for a, s in zip(adv, group))
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert out.sample_size == out.ntokens == sum(len(c) for g in captions for c in g)
    assert out.nsentences == 6 and out.sums["reward"] == pytest.approx(2 * 6.0)
    assert float(out.nll_loss) == pytest.approx(-sum(float(s) for g in scores for s in g), rel=1e-4)


def one_step(model, batch, generation, rewards, lr=1e-3):
    crit = SelfCriticalCriterion(generation, IndexReward(rewards), tokenizer=mini_tokenizer())
    captions = crit.sample(model, batch)
    with torch.no_grad():
        before, _ = crit.log_probs(model, batch, captions)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    out = crit(model, batch)
    (out.loss / out.sample_size).backward()  # the trainer's normalisation: by caption tokens
    opt.step()
    with torch.no_grad():
        after, _ = crit.log_probs(model, batch, captions)
    return captions, before.sum(1), after.sum(1)


def test_an_update_raises_the_above_baseline_caption(tmp_path):
    batch = caption_batch(tmp_path, n=1)
    # two sampled captions (different tokens throughout), rewards 0 and 1: the baselines are 1 and
    # 0, so the second is pushed up and the first down
    model = small_model(seed=1)
    captions, before, after = one_step(model, batch, {"beam_size": 2, "max_len_b": 4, "sampling": True, "seed": 3},
                                       [0.0, 1.0])
    assert not torch.equal(captions[0][0], captions[0][1])
    assert float(after[1]) > float(before[1])
    assert float(after[0]) < float(before[0])
    assert model.training is False  # sampling left the modes as they were
    # beam search: the two captions share most of their tokens, so both may move the same way,
    # but the above-baseline one always gains on the other (to first order by lr * |g1 - g0|^2)
    for seed in (0, 1):
        _, before, after = one_step(small_model(seed=seed), batch, {"beam_size": 2, "max_len_b": 4}, [0.0, 1.0])
        assert float(after[1] - after[0]) > float(before[1] - before[0])
        _, before2, after2 = one_step(small_model(seed=seed), batch, {"beam_size": 2, "max_len_b": 4}, [1.0, 0.0])
        assert float(after2[0] - after2[1]) > float(before2[0] - before2[1])


# normal location rows: with the mini size's smooth (fourier) ones an untrained model's beams are
# runs of <bin_k> tokens, which caption cleaning turns into one word each, leaving no n-grams to reward
RUN = {"task": "caption", "model": "mini",
       "model_config": {"encoder_layers": 1, "decoder_layers": 1, "location_embedding_init": "normal"},
       "batch_size": 4, "max_update": 2, "lr": 1e-3, "warmup_updates": 1, "data": {"patch_image_size": 64},
       "criterion": "scst", "scst": {"beam_size": 3, "max_len_b": 5, "cider_df": "corpus"}, "freeze_bn": True,
       "progress": False, "tensorboard": False, "validate_every_epochs": 0, "save_every_epochs": 0,
       "log_every": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def own_captions(tmp_path_factory):
    """Scenes whose references are what the run's initial model decodes (one of its beams), so the
    rewards of the first updates are not all zero; plus the JSON recipe of a short SCST run."""
    import json

    from openofa.data import build_dataset
    from openofa.generation import SequenceGenerator
    from openofa.train.model import build_model_for
    from openofa.train.recipe import config_from_mapping

    folder = tmp_path_factory.mktemp("scst")
    images = scenes_caption(folder, n=4, seed=740)
    model = build_model_for(config_from_mapping(RUN)).eval()
    ds = build_dataset("caption", images, patch_image_size=64, scst=True, tokenizer=mini_tokenizer())
    net = ds.collater([ds[i] for i in range(len(ds))])["net_input"]
    hypos = SequenceGenerator(beam_size=3, max_len_b=5).generate(model, net["src_tokens"], net["src_lengths"],
                                                                 net["patch_images"], net["patch_masks"])
    tok = mini_tokenizer()
    rows = [json.loads(line) for line in images.read_text().splitlines()]
    out = folder / "own.jsonl"
    with out.open("w") as f:
        for i, (row, group) in enumerate(zip(rows, hypos)):
            # an untrained model says much the same for every image: take a different beam for
            # each, so that the references differ and their n-grams get non-zero weights
            caption = reward_text(tok.decode([int(t) for t in group[i % 3].tokens[:-1]]))[: -len(" <eos>")]
            f.write(json.dumps({**row, "caption": caption}) + "\n")
    recipe = folder / "stage2.json"
    recipe.write_text(json.dumps({**RUN, "train_data": str(out), "valid_data": str(out), "best_metric": "cider",
                                  "maximize_best": True, "validate_every_updates": 2, "eval": {"max_len_b": 5}}))
    return recipe


def read_log(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_run_from_a_recipe(own_captions, tmp_path, capsys):
    from openofa.train.cli import main

    assert main([str(own_captions), "--run-dir", str(tmp_path / "run")]) == 0
    assert "done: 2 updates" in capsys.readouterr().out
    rows = read_log(tmp_path / "run" / "train_log.csv")
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
    # one beam of every image is its own reference: a reward above zero, and a gradient
    assert float(rows[0]["reward"]) > 0.5 and float(rows[0]["gnorm"]) > 0
    assert "cider" in read_log(tmp_path / "run" / "valid_log.csv")[0]
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_two_processes_take_the_same_steps(own_captions, tmp_path):
    """DDP: two processes with 2 images each give the losses and rewards of one with 4."""
    import os
    import subprocess
    import sys

    from openofa.train.cli import main

    assert main([str(own_captions), "--run-dir", str(tmp_path / "one")]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "openofa.train.cli", str(own_captions), "--run-dir", str(tmp_path / "two"), "--set", "batch_size=2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    one, two = read_log(tmp_path / "one" / "train_log.csv"), read_log(tmp_path / "two" / "train_log.csv")
    assert len(one) == len(two) == 2
    for key in ("loss", "reward", "sample_size"):
        assert [float(r[key]) for r in two] == pytest.approx([float(r[key]) for r in one], abs=1e-5), key
    assert float(one[0]["reward"]) > 0


def test_bad_settings_are_errors(tmp_path):
    with pytest.raises(OFAError, match=r"scst\.beam_sise: unknown option .*did you mean 'beam_size'"):
        TrainConfig(max_update=1, criterion="scst", scst={"beam_sise": 5}).validate("r.yaml")
    with pytest.raises(OFAError, match="criterion: 'reinforce' is not one of"):
        TrainConfig(max_update=1, criterion="reinforce").validate("r.yaml")
    with pytest.raises(OFAError, match="options for criterion scst"):
        TrainConfig(max_update=1, scst={"beam_size": 2}).validate("r.yaml")
    from openofa.config import get_config

    cfg = TrainConfig(task="vqa", max_update=1, criterion="scst").validate("r.yaml")
    with pytest.raises(OFAError, match="needs task caption, not vqa"):
        SelfCriticalCriterion.from_config(cfg, get_config("mini"), None)
    with pytest.raises(OFAError, match="no reference caption"):
        CiderReward()([["a"]], [[]])
