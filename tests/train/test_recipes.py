"""Recipes: every file in recipes/ reads into a valid TrainConfig with the original scripts'
values, says how to launch it, and fits the data layer's options; errors name file and key."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from openofa.errors import OFAError
from openofa.train.recipe import TrainConfig, apply_overrides, config_from_mapping, load_recipe, load_stages

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ALL = sorted(RECIPES.glob("*.yaml"))

yaml = pytest.importorskip("yaml", reason="YAML recipes need PyYAML")


def test_every_task_and_size_has_a_recipe():
    names = {p.stem for p in ALL}
    for task in ("caption", "vqa", "refcoco", "snli_ve", "imagenet", "gigaword", "glue_mnli", "glue_sst2",
                 "glue_cola", "glue_rte", "glue_qnli", "glue_qqp", "glue_mrpc"):
        for size in ("base", "large"):
            assert f"{task}_{size}" in names


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_recipe_reads_and_says_how_to_launch(path):
    stages = load_stages(path)
    head = path.read_text().split("\n\n")[0]
    assert f"python -m openofa.train.cli recipes/{path.name}" in head
    assert "torchrun --nproc_per_node" in head and f"recipes/{path.name}" in head
    if len(stages) > 1:  # stage NAME runs in runs/<recipe>/NAME
        assert [c.run_dir for c in stages] == [f"runs/{path.stem}/{Path(c.run_dir).name}" for c in stages]
        return
    cfg = stages[0]
    assert cfg.run_dir == f"runs/{path.stem}"
    if cfg.task not in ("synthetic", "mixture") and not cfg.model.startswith("mini"):
        # values every original finetuning script shares (the project's own models have their own)
        assert (cfg.weight_decay, cfg.adam_betas, cfg.adam_eps, cfg.clip_norm) == (0.01, [0.9, 0.999], 1e-8, 1.0)
        assert cfg.model in path.stem
        if cfg.criterion == "scst":  # caption stage 2 continues from the stage-1 recipe's best weights
            assert cfg.init_from == f"runs/caption_{cfg.model}/best"
        elif cfg.criterion == "clip_scst":  # so does text-to-image stage 2
            assert cfg.init_from == f"runs/imagine_{cfg.model}/best"
        elif path.stem.endswith("_cn_base"):  # the Chinese recipes start from the Chinese pretrained file
            assert cfg.init_from == f"checkpoints/ofa_cn_{cfg.model}.pt"
        else:
            assert cfg.init_from == f"checkpoints/ofa_{cfg.model}.pt"
        assert cfg.precision == "fp16" and cfg.fp16_scale_window == 512 and cfg.validation_seed == 7
        assert cfg.maximize_best and cfg.model_config["resnet_drop_path_rate"] == 0.0


def test_values_of_some_original_scripts():
    c = load_recipe(RECIPES / "caption_base.yaml")
    assert (c.lr, c.max_epoch, c.warmup_ratio, c.batch_size, c.update_freq) == (1e-5, 5, 0.06, 8, 4)
    assert (c.drop_worst_ratio, c.drop_worst_after, c.freeze_embedding, c.label_smoothing) == (0.2, 6000, True, 0.1)
    assert c.data == {"columns": "0,4,2", "patch_image_size": 480, "max_src_length": 80, "max_tgt_length": 20}
    v = load_recipe(RECIPES / "vqa_large.yaml")
    assert (v.total_num_update, v.max_update, v.warmup_updates, v.lr, v.ema_decay) == (40000, 40000, 1000, 5e-5, 0.9999)
    assert v.model_config["encoder_drop_path_rate"] == 0.2
    r = load_recipe(RECIPES / "refcoco_large.yaml")
    assert (r.lr, r.max_epoch, r.update_freq, r.data["patch_image_size"], r.freeze_embedding) == (3e-5, 10, 8, 512, False)
    s = load_recipe(RECIPES / "snli_ve_large.yaml")
    assert (s.lr, s.max_epoch, s.label_smoothing) == (2e-5, 6, 0.0)
    g = load_recipe(RECIPES / "gigaword_large.yaml")
    assert (g.lr, g.batch_size, g.data["noise_ratio"], g.eval["len_penalty"]) == (1e-4, 64, 0.2, 0.7)
    for size, end_lr in (("base", 0.0), ("large", 2e-7)):
        c2 = load_recipe(RECIPES / f"caption_stage2_{size}.yaml")
        assert (c2.criterion, c2.lr, c2.end_lr, c2.max_epoch, c2.batch_size, c2.update_freq) == \
            ("scst", 1e-5, end_lr, 3, 2, 4)
        assert c2.scst == {"beam_size": 5, "max_len_b": 16, "no_repeat_ngram_size": 3, "cider_df": "corpus"}
        assert c2.data["columns"] == "1,4,2" and c2.data["scst"] is True
        assert all(v == 0.0 for v in c2.model_config.values())
    v = load_recipe(RECIPES / "vqa_base.yaml")
    assert v.data["ans2label_file"].endswith("trainval_ans2label.pkl") and v.eval["mode"] == "allcand"
    m = load_recipe(RECIPES / "glue_mnli_large.yaml")
    assert (m.fp16_init_scale, m.label_smoothing, m.data["prompt_type"]) == (16, 0.0, "src")



@pytest.mark.parametrize("size", ["tiny", "base", "large"])
def test_pretraining_recipes_have_the_original_script_values(size):
    c = load_recipe(RECIPES / f"pretrain_{size}.yaml")
    assert (c.task, c.model, c.init_from) == ("mixture", size, f"checkpoints/ofa_{size}.pt")
    assert list(c.mixture) == ["pretrain_vl", "pretrain_text", "pretrain_image", "pretrain_detection"]
    assert c.mixture_ratio == {"pretrain_text": 0.25, "pretrain_image": 0.125, "pretrain_detection": 0.125}
    assert (c.lr, c.end_lr, c.warmup_ratio, c.max_epoch, c.max_update, c.update_freq) == (1e-4, 0.0, 0.01, 50, 0, 1)
    assert (c.weight_decay, c.adam_betas, c.adam_eps, c.clip_norm, c.label_smoothing) == \
        (0.01, [0.9, 0.999], 1e-8, 5.0, 0.0)
    assert (c.precision, c.fp16_scale_window, c.save_every_updates, c.validate_every_epochs) == ("fp16", 128, 6000, 0)
    assert c.model_config == {"dropout": 0.1, "attention_dropout": 0.0, "encoder_drop_path_rate": 0.1,
                              "decoder_drop_path_rate": 0.1, "resnet_drop_path_rate": 0.0}
    d = c.data
    assert (d["patch_image_size"], d["max_src_length"], d["max_tgt_length"], d["num_bins"], d["max_image_size"]) == \
        (384, 80, 30, 1000, 512)
    assert d["train_augment"] is True and d["pretrain_vl"]["neg_sample_dir"].endswith("negative_sample")


def test_mixture_ratio_is_checked(tmp_path):
    base = {"task": "mixture", "max_epoch": 1, "mixture": {"pretrain_vl": "a.tsv", "pretrain_text": "b.tsv"}}
    ok = config_from_mapping({**base, "mixture_ratio": {"pretrain_text": 0.5}})
    assert ok.mixture_ratio == {"pretrain_text": 0.5}
    for ratio, message in (({"pretrain_image": 0.5}, "mixture_ratio.pretrain_image: not a task of mixture"),
                           ({"pretrain_vl": 0.5}, "mixture_ratio.pretrain_vl: the first mixture file"),
                           ({"pretrain_text": 0}, "mixture_ratio.pretrain_text: must be a number > 0")):
        with pytest.raises(OFAError, match=message):
            config_from_mapping({**base, "mixture_ratio": ratio})
    with pytest.raises(OFAError, match="mixture_ratio: applies to task: mixture"):
        config_from_mapping({"task": "caption", "max_epoch": 1, "mixture_ratio": {"x": 1}})
    cfg = load_recipe(RECIPES / "pretrain_base.yaml", ["mixture_ratio.pretrain_text=0.5",
                                                       f"mixture.pretrain_vl={tmp_path}/vl.tsv"])
    assert cfg.mixture_ratio["pretrain_text"] == 0.5 and cfg.mixture["pretrain_vl"].endswith("vl.tsv")

@pytest.mark.parametrize("path", [p for p in ALL if not p.stem.startswith("synthetic")], ids=lambda p: p.stem)
def test_recipes_fit_the_data_layer_and_generator(path):
    for cfg in load_stages(path):
        _fits_the_data_layer_and_generator(cfg)


def _fits_the_data_layer_and_generator(cfg):
    import openofa.data as data
    from openofa.data.samples import SampleBuilder
    from openofa.generation import GenerationConfig

    accepted = set(inspect.signature(data.build_dataset).parameters) | set(
        inspect.signature(SampleBuilder.__init__).parameters)
    if cfg.task == "mixture":  # per-task options under data[task], shared ones at the top
        for task in cfg.mixture:
            data.canonical_task(task)
            assert set(cfg.data.get(task) or {}) <= accepted
        assert {k for k, v in cfg.data.items() if not isinstance(v, dict)} <= accepted
    elif cfg.task == "trunk":  # the trunk alone on a detection file, at the data's image size
        assert str(cfg.train_data).endswith("detection.jsonl") and cfg.data["patch_image_size"] % 16 == 0
    elif cfg.task == "vq":  # the drawing model's tokenizer on drawing scenes, at the model's code image size
        from openofa.config import get_config

        assert str(cfg.train_data).endswith("draw.jsonl")
        assert cfg.data["patch_image_size"] == get_config(cfg.model).code_image_size
    else:
        data.canonical_task(cfg.task)
        if str(cfg.train_data).endswith(".jsonl"):  # the plain format names its fields
            assert "columns" not in cfg.data
        else:
            data.resolve_columns(cfg.task, cfg.data["columns"])
        assert set(cfg.data) <= accepted
    known = {f for f in GenerationConfig.__dataclass_fields__} | {"mode", "limit"}
    if cfg.task not in ("mixture", "trunk", "vq", "synthetic"):  # and the task's own options (imagine: samples, vqgan)
        from openofa.tasks import task_of_layout
        from openofa.data.layouts import get_layout

        known |= {f.name for f in task_of_layout(get_layout(cfg.task)).options}
    assert set(cfg.eval) <= known


def test_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: caption\nmax_epoch: 1\nlrr: 1.0e-5\n")
    with pytest.raises(OFAError, match=r"bad\.yaml: unknown key 'lrr' \(did you mean 'lr'\?\)"):
        load_recipe(bad)
    bad.write_text("max_epoch: 1\nbatch_size: eight\n")
    with pytest.raises(OFAError, match=r"bad\.yaml: batch_size: expected an integer"):
        load_recipe(bad)
    bad.write_text("max_epoch: 1\nmodel_config: {dropot: 0.1}\n")
    with pytest.raises(OFAError, match=r"model_config\.dropot: unknown OFAConfig field"):
        load_recipe(bad)
    bad.write_text("max_epoch: 1\nprecision: fp8\n")
    with pytest.raises(OFAError, match=r"bad\.yaml: precision: 'fp8'"):
        load_recipe(bad)
    bad.write_text("lr: 1.0e-5\n")
    with pytest.raises(OFAError, match="set max_epoch or max_update"):
        load_recipe(bad)
    bad.write_text("task: [unclosed\n")
    with pytest.raises(OFAError, match=r"bad\.yaml: not valid YAML at line"):
        load_recipe(bad)
    with pytest.raises(OFAError, match="no such recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_overrides_and_json(tmp_path):
    cfg = load_recipe(RECIPES / "caption_base.yaml", ["lr=2e-5", "data.max_src_length=100", "update_freq=16",
                                                      "model_config.dropout=0.0", "eval.beam_size=3"])
    assert (cfg.lr, cfg.data["max_src_length"], cfg.data["patch_image_size"], cfg.update_freq) == (2e-5, 100, 480, 16)
    assert cfg.model_config["dropout"] == 0.0 and cfg.eval["beam_size"] == 3
    with pytest.raises(OFAError, match="only .* take dotted keys"):
        apply_overrides({}, ["lr.x=1"])
    with pytest.raises(OFAError, match="expected key=value"):
        apply_overrides({}, ["lr"])
    js = tmp_path / "r.json"
    js.write_text(json.dumps({"task": "synthetic", "model": "tiny", "max_update": 3}))
    assert load_recipe(js).max_update == 3
    assert config_from_mapping({"max_epoch": 1}).to_dict() == TrainConfig(max_epoch=1).to_dict()


def test_command_line(tmp_path, capsys):
    from openofa.train.cli import main

    assert main([str(RECIPES / "caption_base.yaml"), "--print-config", "--set", "lr=3e-5"]) == 0
    assert json.loads(capsys.readouterr().out)["lr"] == 3e-5
    assert main(["caption_base", "--print-config"]) == 0  # a bare name is looked up in recipes/
    capsys.readouterr()
    assert main([str(RECIPES / "caption_base.yaml"), "--set", "lrr=1"]) == 2
    assert "error: " in capsys.readouterr().err
    assert main([str(RECIPES / "caption_base.yaml"), "--set", f"init_from={tmp_path}/none.pt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: init_from: ") and err.count("\n") == 1


def _staged(tmp_path, stages, **top):
    recipe = {"task": "synthetic", "model": "tiny", "max_update": 2, "batch_size": 2, "lr": 1e-3,
              "run_dir": str(tmp_path / "run"), "progress": False, "validate_every_epochs": 0,
              "model_config": {"encoder_layers": 1, "decoder_layers": 1, "vocab_size": 1000},
              "data": {"num_examples": 8, "src_len": 8, "tgt_len": 4, "image_size": 64}, **top,
              "stages": stages}
    path = tmp_path / "staged.json"
    path.write_text(json.dumps(recipe))
    return path


def test_stages_inherit_the_file_and_chain_their_weights(tmp_path):
    path = _staged(tmp_path, [{"name": "first", "lr": 2e-3, "data": {"tgt_len": 3}},
                              {"name": "second", "max_update": 3}])
    first, second = load_stages(path, ["batch_size=4"])
    assert (first.run_dir, second.run_dir) == (f"{tmp_path}/run/first", f"{tmp_path}/run/second")
    assert (first.lr, second.lr) == (2e-3, 1e-3) and (first.max_update, second.max_update) == (2, 3)
    # mapping keys merge one level deep; --set applies to every stage
    assert first.data == {"num_examples": 8, "src_len": 8, "tgt_len": 3, "image_size": 64}
    assert second.data["tgt_len"] == 4 and first.batch_size == second.batch_size == 4
    assert first.init_from is None and second.init_from == f"{tmp_path}/run/first/final"
    assert load_stages(path, [f"run_dir={tmp_path}/other"])[1].init_from == f"{tmp_path}/other/first/final"
    with pytest.raises(OFAError, match="has stages"):
        load_recipe(path)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"task": "synthetic", "max_update": 3}))
    assert [c.max_update for c in load_stages(plain)] == [3]


@pytest.mark.parametrize("stages, message", [
    ([], "non-empty list"),
    ([{"lr": 1e-3}], "needs a name"),
    ([{"name": "../up"}], "needs a name"),
    ([{"name": "a"}, {"name": "a"}], "used twice"),
    ([{"name": "a", "run_dir": "x"}], "run_dir cannot be set per stage"),
    ([{"name": "a", "lrr": 1}], r"stage a\): unknown key 'lrr'"),
])
def test_bad_stages_are_named(tmp_path, stages, message):
    with pytest.raises(OFAError, match=message):
        load_stages(_staged(tmp_path, stages))


def test_a_staged_recipe_trains_each_stage_from_the_last(tmp_path, capsys):
    import openofa
    from openofa.train.cli import main

    path = _staged(tmp_path, [{"name": "first"}, {"name": "second", "lr": 1e-30, "warmup_ratio": 0.0,
                                                  "end_lr": 0.0, "freeze_bn": True}])
    assert main([str(path)]) == 0
    params = [dict(openofa.load(tmp_path / "run" / name / "final").model.named_parameters())
              for name in ("first", "second")]
    # with lr 1e-30 the second stage ends with the weights the first one ended with, to ~1e-30
    # (a second stage that started from fresh weights would be ~1e-3 away: two updates at lr 1e-3)
    assert params[0].keys() == params[1].keys()
    assert max(float((params[0][k] - params[1][k]).detach().abs().max()) for k in params[0]) < 1e-12
    # running it again skips the finished first stage
    capsys.readouterr()
    assert main([str(path)]) == 0
    assert "stage first: already done" in capsys.readouterr().err
