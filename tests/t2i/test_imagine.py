"""Text-to-image and infilling: the original's prompt, its sampling rule (step-0 draws, top-k,
the order of temperature and masks, the seed) against a plain re-statement of it, one encoder
pass per batch, the API, the command line and training samples. Models are small random ones
(a 4x4 code grid) so that whole generations run in a second."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from openofa import clip, vqgan
from openofa.api import OFA
from openofa.cli import main
from openofa.config import get_config
from openofa.errors import OFAError
from openofa.generation import GenerationConfig, SequenceGenerator
from openofa.model import build_model
from openofa.tasks import get_task
from openofa.tasks.imagine import generation_defaults, source
from openofa.text.tokenizer import OFATokenizer

FIX = Path(__file__).parent.parent / "fixtures" / "t2i"
SMALL = dict(code_image_size=32, encoder_layers=1, decoder_layers=2, encoder_embed_dim=64, decoder_embed_dim=64,
             encoder_ffn_embed_dim=128, decoder_ffn_embed_dim=128, encoder_attention_heads=4,
             decoder_attention_heads=4)
VQ = dict(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(4,), z_channels=16, embed_dim=8,
          n_embed=8192, resolution=32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(get_config("tiny", **SMALL)).eval()
    with torch.no_grad():  # sharper logits than the initialisation, so that top-k and seeds matter
        m.decoder.embed_tokens.weight.mul_(8.0)
    return m


@pytest.fixture(scope="module")
def vq():
    torch.manual_seed(1)
    return vqgan.GumbelVQ(vqgan.VQGANConfig(**VQ)).eval()


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(2)
    c = clip.CLIPConfig(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                        transformer_width=64, transformer_heads=1, transformer_layers=1)
    m = clip.CLIP(c)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return m.eval()


@pytest.fixture(scope="module")
def ofa(model, vq):
    o = OFA(model)
    o.components["vqgan"] = vq
    return o


def test_source_is_the_originals():
    tok = OFATokenizer.for_config(get_config("tiny"))
    want = np.load(FIX / "t2i_teacher_forced.npz")["src_tokens"]
    for row, text in zip(want, ["a yellow circle on a board", "a cat sitting on a sofa"]):
        assert source(tok, "  " + text + " ") == row.tolist()
    long = " ".join(f"w{i}" for i in range(100))
    assert source(tok, long) == source(tok, " ".join(long.split()[:64]))  # 64 words, as max_src_length
    assert source(tok, "A Red Bus") != source(tok, "a red bus")  # no lower-casing


def _reference_sampling(model, src, samples, n, topk, temperature, seed, code_0, codes):
    """The original's image_gen decoding, step by step from teacher-forced logits: logits /
    temperature, code-range mask, log_softmax, then ids 0..3 (and pad) -inf; top-k; step 0 draws
    every sample from the first row with replacement, later steps one per row."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(samples, 1, dtype=torch.long)
    enc = model.encode(src.expand(samples, -1))
    for step in range(n):
        logits = model.decode(tokens, enc, code_masks=torch.ones(samples, dtype=torch.bool))[:, -1] / temperature
        logits[:, 4:code_0] = float("-inf")
        logits[:, code_0 + codes:] = float("-inf")
        lp = F.log_softmax(logits, -1)
        lp[:, :4] = float("-inf")
        vals, idx = lp.topk(topk)
        probs = vals.exp()
        if step == 0:
            pick = torch.multinomial(probs[:1], samples, replacement=True, generator=g).view(-1)
            nxt = idx[0, pick]
        else:
            pick = torch.multinomial(probs, 1, replacement=True, generator=g).view(-1)
            nxt = idx.gather(1, pick[:, None]).view(-1)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
    return tokens[:, 1:]


@pytest.mark.parametrize("topk,temperature,seed", [(256, 1.0, 0), (7, 0.6, 3)])
def test_sampling_follows_the_originals_rule(ofa, model, topk, temperature, seed):
    cfg = model.config
    src = torch.tensor([source(ofa.tokenizer, "a red circle")])
    d = {**generation_defaults(ofa, 5, 16), "sampling_topk": topk, "temperature": temperature, "seed": seed}
    with torch.no_grad():
        hyps = SequenceGenerator(GenerationConfig(**d)).generate(model, src)[0]
        want = _reference_sampling(model, src, 5, 16, topk, temperature, seed, cfg.code_0, cfg.code_dict_size)
    got = {tuple(h.tokens[:-1].tolist()) for h in hyps}
    assert all(len(h.tokens) == 17 and int(h.tokens[-1]) == cfg.eos for h in hyps)
    assert got == {tuple(r) for r in want.tolist()}
    assert all(cfg.code_0 <= t < cfg.code_0 + cfg.code_dict_size for r in got for t in r)


def test_only_the_code_logits_are_computed_and_give_the_same_draws(ofa, model):
    class Plain:  # the model without output_logits: the generator takes the full-vocabulary path
        def __init__(self, m):
            self.m, self.config = m, m.config

        def encode(self, *a, **k):
            return self.m.encode(*a, **k)

        def init_cache(self, *a, **k):
            return self.m.init_cache(*a, **k)

        def decode_step(self, *a, **k):
            return self.m.decode_step(*a, **k)

    src = torch.tensor([source(ofa.tokenizer, "two cats")])
    gen = SequenceGenerator(GenerationConfig(**generation_defaults(ofa, 4, 16)))
    with torch.no_grad():
        fast, plain = gen.generate(model, src)[0], gen.generate(Plain(model), src)[0]
    assert [h.tokens.tolist() for h in fast] == [h.tokens.tolist() for h in plain]
    torch.testing.assert_close(torch.stack([h.positional_scores for h in fast]),
                               torch.stack([h.positional_scores for h in plain]), atol=1e-4, rtol=1e-4)


def test_imagine_api(ofa, model, monkeypatch):
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda *a, **k: calls.append(a[0].shape) or encode(*a, **k))
    r = ofa.imagine("a red bus on a street", samples=4, seed=0)
    assert len(calls) == 1 and calls[0][0] == 1  # 4 samples, one encoder pass of one row
    assert len(r["images"]) == 4 and all(im.size == (32, 32) and im.mode == "RGB" for im in r["images"])
    assert len(r["scores"]) == 4 and all(s < 0 for s in r["scores"])
    again = ofa.imagine("a red bus on a street", samples=4, seed=0)
    assert [a.tobytes() for a in r["images"]] == [b.tobytes() for b in again["images"]]
    other = ofa.imagine("a red bus on a street", samples=4, seed=1)
    assert [a.tobytes() for a in r["images"]] != [b.tobytes() for b in other["images"]]
    calls.clear()
    both = ofa.run("imagine", [{"text": "a red bus"}, {"text": "two cats"}], samples=3, sampling_topk=5,
                   temperature=0.7, seed=2)
    assert len(calls) == 1 and calls[0][0] == 2 and [len(b["images"]) for b in both] == [3, 3]
    assert len(ofa.imagine(["a", "b"], samples=2)) == 2
    nucleus = ofa.imagine("a red bus", samples=2, sampling_topp=0.3, seed=5)  # top-p instead of top-k
    assert len(nucleus["images"]) == 2
    with pytest.raises(OFAError, match="empty"):
        ofa.imagine("   ")
    with pytest.raises(OFAError, match="samples"):
        ofa.imagine("a bus", samples=0)


def test_rerank_orders_by_clip_similarity(ofa, tiny_clip, monkeypatch):
    monkeypatch.setitem(ofa.components, "clip", tiny_clip)
    r = ofa.imagine("a red bus", samples=4, seed=0, rerank=True)
    plain = ofa.imagine("a red bus", samples=4, seed=0)
    want = clip.scores(tiny_clip, plain["images"], "a red bus").tolist()
    order = sorted(range(4), key=lambda i: -want[i])
    assert r["clip_scores"] == sorted(r["clip_scores"], reverse=True)
    np.testing.assert_allclose(r["clip_scores"], [want[i] for i in order], atol=1e-6)
    assert [im.tobytes() for im in r["images"]] == [plain["images"][i].tobytes() for i in order]


def test_missing_vqgan_is_one_error(model):
    with pytest.raises(OFAError, match="VQGAN"):
        OFA(model).imagine("a bus", samples=1)


def test_infill_keeps_the_border(ofa):
    image = Image.open(FIX / "a_200x150_rgb.png")
    r = ofa.infill(image, samples=2, seed=0)
    assert len(r["images"]) == 2 and r["image"].size == (64, 64)  # 2 * code_image_size
    square = np.asarray(image.convert("RGB").resize((64, 64), Image.BICUBIC)).astype(int)
    got = np.asarray(r["image"]).astype(int)
    border = np.ones((64, 64), bool)
    border[16:48, 16:48] = False
    assert np.array_equal(got[border], square[border])
    assert not np.array_equal(got[~border], square[~border])


def test_training_sample_is_the_originals():
    from openofa.data.records import Record
    from openofa.data.samples import make_builder

    b = make_builder("imagine", "en")
    tok = b.tok
    r = Record(id=1, text="a cat sitting on a sofa", extra={"code": [0, 5, 8191]}, where="x:1")
    s = get_task("imagine").sample(b, r)
    first = tok.code_0
    assert s["source"].tolist() == source(tok, "a cat sitting on a sofa")
    assert s["target"].tolist() == [first, first + 5, first + 8191, tok.eos]
    assert s["prev_output_tokens"].tolist() == [tok.bos, first, first + 5, first + 8191]
    assert s["code_mask"] is True and s["patch_image"] is None
    with pytest.raises(Exception, match="outside"):
        get_task("imagine").sample(b, Record(id=2, text="x", extra={"code": [8192]}, where="x:2"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model, vq):
    import yaml

    from openofa.checkpoints import save_pretrained

    folder = tmp_path_factory.mktemp("t2i") / "small"
    save_pretrained(folder, model.config, model.state_dict())
    (folder / "vqgan").mkdir()
    torch.save({"state_dict": vq.state_dict()}, folder / "vqgan" / "last.ckpt")
    dd = {k: (list(v) if isinstance(v, tuple) else v) for k, v in VQ.items() if k not in ("embed_dim", "n_embed")}
    cfg = {"model": {"target": "taming.models.vqgan.GumbelVQ",
                     "params": {"embed_dim": 8, "n_embed": 8192, "ddconfig": {**dd, "in_channels": 3, "out_ch": 3}}}}
    (folder / "vqgan" / "model.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def test_cli_imagine_writes_the_images(capsys, model_dir, tmp_path):
    out = tmp_path / "out"
    code = main(["imagine", "a red bus on a street", "--samples", "3", "--out", str(out), "-m", str(model_dir),
                 "--json", "--seed", "4"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert len(res["files"]) == 3 and all(Path(f).is_file() for f in res["files"])
    assert Image.open(res["files"][0]).size == (32, 32) and len(res["scores"]) == 3
    code = main(["imagine", "a bus", "--samples", "0", "-m", str(model_dir), "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err


def test_eval_reports_the_best_clip_score(ofa, tiny_clip, tmp_path, monkeypatch):
    from openofa.evaluate import evaluate

    monkeypatch.setitem(ofa.components, "clip", tiny_clip)
    data = tmp_path / "coco_vqgan_test.tsv"  # id, image codes, caption (--selected-cols 0,2,1)
    data.write_text("1\t\ta red bus\n2\t\ttwo cats on a sofa\n")
    out = tmp_path / "eval"
    m = evaluate(ofa, "imagine", data, samples=3, progress=False, out_dir=out, batch_size=1)
    best = [max(ofa.imagine(t, samples=3, rerank=True)["clip_scores"]) for t in ("a red bus", "two cats on a sofa")]
    assert m["count"] == 2 and m["CLIP score"] == pytest.approx(sum(best) / 2, abs=1e-6)
    assert (out / "metrics.json").is_file()
    np.savez(tmp_path / "gt_stat.npz", mu=np.zeros(4), sigma=np.eye(4))
    try:
        import pytorch_fid  # noqa: F401
        has_fid = True
    except Exception:
        has_fid = False
    if not has_fid:  # the FID path then fails with one clear line, not deep inside
        with pytest.raises(OFAError, match="pytorch-fid"):
            evaluate(ofa, "imagine", data, samples=2, progress=False, fid_stats=str(tmp_path / "gt_stat.npz"))


def test_fid_and_is_arithmetic():
    from openofa.metrics.image_gen import frechet_distance, inception_score, statistics

    assert frechet_distance([1.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(4 + 4 + 1 - 2 * 2)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    mu, s = statistics(a)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    d = np.diag([1.0, 4.0, 9.0])
    assert frechet_distance(np.zeros(3), d, np.ones(3), np.eye(3)) == pytest.approx(3 + 14 + 3 - 2 * 6)
    assert inception_score(np.full((20, 5), 0.2), splits=2)[0] == pytest.approx(1.0)
    assert inception_score(np.eye(8), splits=1)[0] == pytest.approx(8.0)


def test_cli_infill_writes_the_images(capsys, model_dir, tmp_path):
    out = tmp_path / "infill"
    code = main(["infill", str(FIX / "a_200x150_rgb.png"), "--samples", "2", "--out", str(out), "-m", str(model_dir),
                 "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert [Path(f).name for f in res["files"]] == ["a_200x150_rgb_infill_0.png", "a_200x150_rgb_infill_1.png"]
    assert Image.open(res["files"][0]).size == (64, 64)
