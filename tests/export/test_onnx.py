"""ONNX export of the bundled small model: each graph equals PyTorch (1e-4), beam search through
onnxruntime gives PyTorch's tokens on held-out scenes, the command writes a folder, and what is not
exported is refused with one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import openofa
from openofa.cli import main
from openofa.errors import OFAError
from openofa.export import export_onnx, load_onnx
from openofa.export.onnx_runtime import OnnxModel
from openofa.generation import GenerationConfig, SequenceGenerator
from openofa.mini.scenes import write_dataset
from openofa.tasks import caption

ATOL = 1e-4


@pytest.fixture(scope="module")
def ofa():
    return openofa.load()


@pytest.fixture(scope="module")
def folder(ofa, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(ofa, out)
    return out


@pytest.fixture(scope="module")
def runtime(folder):
    return OnnxModel(folder)


def _released_layout():
    """The bundled model's weights with the position flags of the released checkpoints (no
    position embedding added to the decoder's or the encoder's inputs): the other branches."""
    import dataclasses

    from openofa.model import model_from_state_dict

    model = openofa.load(fold_batchnorm=False, prepack=False).model
    cfg = dataclasses.replace(model.config, disable_entangle=True, entangle_position_embedding=False)
    return model_from_state_dict(cfg, model.state_dict()).eval()


def _with_adapters():
    """The bundled model with adapters after every FFN and self-attention (trained-like weights)."""
    import copy

    from openofa.petl import apply

    model = copy.deepcopy(openofa.load().model)
    apply(model, {"method": "adapter", "dim": 8, "attention": True})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter." in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module", params=["mini", "released-layout", "tiny", "adapters"])
def pair(request, ofa, folder, runtime, tmp_path_factory):
    """(PyTorch model, its graphs in onnxruntime): the bundled model, the same with the released
    files' position flags, the tiny size with recipe weights (another width, vocabulary and
    position table), and the bundled model with adapters (parameter-efficient tuning)."""
    if request.param == "mini":
        return ofa.model, runtime
    if request.param == "tiny":
        from support import recipe_model

        model = recipe_model("tiny")
    elif request.param == "adapters":
        model = _with_adapters()
    else:
        model = _released_layout()
    out = tmp_path_factory.mktemp(request.param)
    export_onnx(model, out, image_size=128)
    return model, OnnxModel(out)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    files = write_dataset(out, n=4, seed=0)
    images = [str(out / json.loads(line)["image"]) for line in files["caption"].read_text().splitlines()]
    questions = [json.loads(line) for line in files["vqa"].read_text().splitlines()]
    grounds = [json.loads(line) for line in files["ground"].read_text().splitlines()]
    return (images, [(str(out / q["image"]), q["question"]) for q in questions[::3]],
            [{"image": str(out / g["image"]), "text": g["text"]} for g in grounds[::2]])


def _inputs(cfg, batch: int = 3, seed: int = 0):
    """A batch unlike the one the graphs were traced with: other batch size and text length,
    padding in two rows, one row's image switched off."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 128, 128, generator=g)
    src = torch.full((batch, 9), cfg.pad)
    for i, n in enumerate([9, 4, 6][:batch]):
        src[i, :n] = torch.randint(4, 60, (n,), generator=g)
        src[i, 0], src[i, n - 1] = cfg.bos, cfg.eos
    masks = torch.tensor([True, False, True][:batch])
    return src, images, masks


def _close(onnx_out, torch_out) -> float:
    return float((torch.from_numpy(np.asarray(onnx_out)) - torch_out).abs().max())


def test_manifest_names_the_graphs(folder, ofa):
    m = json.loads((folder / "manifest.json").read_text())
    cfg = ofa.model.config
    assert "(1.5M parameters" in load_onnx(folder).describe()
    assert m["image_size"] == [128, 128] and m["grid"] == [8, 8] and m["opset"] == 17
    assert m["num_layers"] == cfg.decoder_layers and m["tokens"]["eos"] == cfg.eos
    assert m["config"] == cfg.to_dict()
    assert m["parameters"] == sum(p.numel() for p in ofa.model.parameters())
    step = m["graphs"]["decoder_step"]
    assert step["inputs"][:4] == ["token", "step", "padding_mask", "cross_pos_k"]
    assert step["outputs"] == ["logits"] + [f"present_{kv}_{i}" for i in range(cfg.decoder_layers) for kv in "kv"]
    for graph in m["graphs"].values():
        assert (folder / graph["file"]).is_file()


def test_image_and_text_encoders_equal_pytorch(pair):
    model, runtime = pair
    src, images, masks = _inputs(model.config)
    with torch.no_grad():
        embeds = model.encoder.embed_image(images)[0]
        enc = model.encode(src, None, images, masks)
        cross = [kv for layer in model.decoder.layers for kv in layer.encoder_attn.project_kv(enc.hidden)]
        pos_k = model.decoder.cross_pos_keys(enc)
    (onnx_embeds,) = runtime.sessions["image_encoder"].run(None, {"patch_images": images.numpy()})
    assert _close(onnx_embeds, embeds) < ATOL
    out = runtime.encode(src, None, images, masks)
    assert _close(out.hidden, enc.hidden) < ATOL
    assert np.array_equal(out.padding_mask, enc.padding_mask.numpy())
    assert out.padding_mask[1, :64].all() and not out.padding_mask[0].any()  # the image switched off
    assert _close(out.cross_pos_k, pos_k) < ATOL
    assert len(out.cross_kv) == len(cross)
    assert max(_close(a, b) for a, b in zip(out.cross_kv, cross)) < ATOL


def test_decoder_step_equals_pytorch_with_beams(pair):
    """Logits and every layer's keys/values at each step, 3 inputs x 2 rows, rows reordered
    between steps (as beam search does) and an input dropped."""
    model, runtime = pair
    src, images, masks = _inputs(model.config)
    group = 2
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, 60, (src.shape[0] * group, 7), generator=g)
    tokens[:, 0] = model.config.bos
    with torch.no_grad():
        cache = model.init_cache(model.encode(src, None, images, masks), beam_size=group)
    ocache = runtime.init_cache(runtime.encode(src, None, images, masks), beam_size=group)
    for t in range(tokens.shape[1]):
        with torch.no_grad():
            want = model.decode_step(tokens[:, : t + 1], cache)
        got = runtime.decode_step(tokens[:, : t + 1], ocache)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert float((got - want).abs().max()) < ATOL, t
        for i, kv in enumerate(cache.self_kv):
            assert ocache.past[2 * i].shape[2] == t + 1
            assert _close(ocache.past[2 * i], kv.k[:, :, : t + 1]) < ATOL
            assert _close(ocache.past[2 * i + 1], kv.v[:, :, : t + 1]) < ATOL
        rows = tokens.shape[0]
        order = torch.arange(rows).view(-1, group).flip(1).reshape(-1)  # swap the beams of each input
        if t == 3:  # the second input is finished: its rows leave
            order = torch.tensor([0, 0, 5, 4])
            tokens = tokens[order]
        cache.reorder(order)
        ocache.reorder(order)
        if t != 3:
            tokens = tokens[order]
    assert ocache.enc.batch_size == 2


def test_beam_search_gives_pytorchs_tokens(ofa, runtime, scenes):
    images = scenes[0]
    tok = ofa.tokenizer
    src = torch.tensor([caption.source(tok)] * len(images))
    patches = torch.stack([ofa.image_tensor(p, "caption") for p in images])
    gen = SequenceGenerator(GenerationConfig(beam_size=4, max_len_b=20, no_repeat_ngram_size=3))
    want = gen.generate(ofa.model, src, None, patches)
    got = gen.generate(runtime, src, None, patches)
    for w, o in zip(want, got):
        assert [h.tokens.tolist() for h in o] == [h.tokens.tolist() for h in w]
        assert max(abs(h.score - k.score) for h, k in zip(o, w)) < ATOL


def test_tasks_through_onnxruntime(ofa, folder, scenes):
    """Caption, VQA (open, and candidates scored), grounding and detection give PyTorch's results."""
    images, questions, grounds = scenes
    onnx = load_onnx(folder)
    want = ofa.run("caption", [{"image": p} for p in images])
    got = onnx.run("caption", [{"image": p} for p in images])
    assert [r["caption"] for r in got] == [r["caption"] for r in want]
    assert len(set(r["caption"] for r in want)) > 1  # four scenes, not one caption for everything
    assert all(abs(a["score"] - b["score"]) < ATOL for a, b in zip(got, want))
    inputs = [{"image": p, "question": q} for p, q in questions]
    assert [r["answer"] for r in onnx.run("vqa", inputs)] == [r["answer"] for r in ofa.run("vqa", inputs)]
    for task, key, items in [("ground", "box", grounds), ("detect", "objects", [{"image": p} for p in images])]:
        want, got = ofa.run(task, items), onnx.run(task, items)
        assert [r[key] for r in got] == [r[key] for r in want], task
        assert all(abs(a["score"] - b["score"]) < ATOL for a, b in zip(got, want))
    # candidate scoring: teacher-forced logits through the step graph
    answers = ["yellow", "red", "blue", "green", "left", "right", "one", "two", "three"]
    want = ofa.run("vqa", inputs, answers=answers, mode="allcand")
    got = onnx.run("vqa", inputs, answers=answers, mode="allcand")
    assert [r["answer"] for r in got] == [r["answer"] for r in want]
    assert all(abs(a["score"] - b["score"]) < ATOL for a, b in zip(got, want))


def test_what_is_not_exported_is_refused(ofa, runtime, folder):
    src, images, masks = _inputs(ofa.model.config)
    with pytest.raises(OFAError, match="with an image"):
        runtime.encode(src)
    with pytest.raises(OFAError, match="128x128"):
        runtime.encode(src, None, images[:, :, :96, :96], masks)
    enc = runtime.encode(src, None, images, masks)
    with pytest.raises(OFAError, match="image-code"):
        runtime.init_cache(enc, 1, code_masks=torch.tensor([True, False, False]))
    with pytest.raises(OFAError, match="features"):
        runtime.decode_step(src[:, :1], runtime.init_cache(enc), features_only=True)
    with pytest.raises(OFAError, match="multiple of 16"):
        export_onnx(ofa, folder / "bad", image_size=100)
    with pytest.raises(OFAError, match="no manifest.json"):
        OnnxModel(folder / "missing")


def test_prefix_tuning_is_refused(ofa, tmp_path):
    import dataclasses

    from openofa.model import OFAModel

    cfg = dataclasses.replace(ofa.model.config, decoder_prompt=True)
    with torch.device("meta"):
        model = OFAModel(cfg)
    with pytest.raises(OFAError, match="prefix tuning"):
        export_onnx(model, tmp_path)
    assert not any(tmp_path.iterdir())


def test_an_int8_model_is_refused(tmp_path):
    from openofa import OFA

    with pytest.raises(OFAError, match="needs a float32 model"):
        export_onnx(OFA.load(dtype="int8"), tmp_path)
    assert not any(tmp_path.iterdir())


def test_command_writes_a_folder_and_rejects_bad_input(tmp_path, capsys):
    out = tmp_path / "graphs"
    assert main(["export", "onnx", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"image_encoder.onnx", "encoder.onnx", "decoder_step.onnx",
                                               "manifest.json"}
    assert "wrote" in capsys.readouterr().out
    for argv, message in [(["--model", str(tmp_path / "nothing")], "nothing"),
                          (["--image-size", "4000"], "multiple of 16"), (["--opset", "9"], "opset 9")]:
        assert main(["export", "onnx", str(tmp_path / "other"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err

