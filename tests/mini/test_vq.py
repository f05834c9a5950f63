"""The small VQ tokenizer and its training stage (openofa.mini.vq, recipe task: vq)."""

from __future__ import annotations

import json

import pytest
import torch

from openofa import vqgan
from openofa.errors import OFAError
from openofa.mini.draw import write_drawing_dataset
from openofa.mini.vq import (Codebook, codes_file, read_images, save_vq, small_config, to_gumbel,
                             train_step_losses)


def test_saved_tokenizer_loads_with_the_vqgan_loader(tmp_path):
    torch.manual_seed(0)
    model = vqgan.GumbelVQ(small_config()).eval()
    save_vq(model, tmp_path / "vq")
    loaded = vqgan.load(tmp_path / "vq")
    assert loaded.config.n_embed == 512 and loaded.factor == 8 and loaded.config.resolution == 64
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    codes = model.encode(images)
    assert codes.shape == (2, 8, 8)
    assert torch.equal(loaded.encode(images), codes)
    torch.testing.assert_close(loaded.decode(codes), model.decode(codes))
    # the key layout is taming-transformers' (what the original's checkpoint holds)
    assert set(loaded.state_dict()) == set(vqgan.state_dict_keys(small_config()))


def test_training_steps_learn_to_reconstruct(tmp_path):
    path = write_drawing_dataset(tmp_path / "d", 8, seed=5)
    _, images = read_images(path, 64)
    x = images.float() / 127.5 - 1
    torch.manual_seed(0)
    model = vqgan.GumbelVQ(small_config())
    codebook = Codebook(512, model.config.embed_dim, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("quantize.")], lr=2e-3)
    first = None
    for _ in range(25):
        out = train_step_losses(model, codebook, x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["mse"].detach())
    model.eval()
    with torch.no_grad():
        nearest = codebook.nearest(model.quant_conv(model.encoder(x)))
    to_gumbel(model, codebook)
    codes = model.encode(x)
    assert torch.equal(codes, nearest)  # GumbelVQ's arg-max picks the nearest code
    recon = model.decode(codes)
    assert float(((recon - x) ** 2).mean()) < 0.5 * first


def test_unused_codes_are_restarted():
    gen = torch.Generator().manual_seed(0)
    book = Codebook(8, 4, decay=0.5, generator=gen)
    z = torch.randn(2, 4, 3, 3, generator=gen)
    assert book.update(z, book.nearest(z)) == 8  # the first batch places every code
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    assert all(any(torch.equal(e, f) for f in flat) for e in book.embed)
    only = torch.zeros(2, 3, 3, dtype=torch.long)  # from now on every feature takes code 0
    restarted = sum(book.update(z, only) for _ in range(4))
    assert restarted >= 7  # the seven unused codes decayed below the threshold and moved


def _recipe(tmp_path, data):
    text = f"""
model: mini-draw
data: {{patch_image_size: 64, max_src_length: 64, max_tgt_length: 65}}
batch_size: 4
num_workers: 0
lr: 1.0e-3
warmup_ratio: 0.0
log_every: 1
seed: 1
run_dir: {tmp_path / 'run'}
stages:
  - name: vq
    task: vq
    train_data: {data}
    max_update: 2
  - name: draw
    task: imagine
    train_data: {codes_file(data)}
    max_update: 2
"""
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_recipe_stage_writes_tokenizer_codes_and_trains_on_them(tmp_path):
    from openofa.train.cli import main

    data = write_drawing_dataset(tmp_path / "d", 6, seed=11)
    assert main([str(_recipe(tmp_path, data))]) == 0
    vq_final = tmp_path / "run" / "vq" / "final"
    tok = vqgan.load(vq_final / "vqgan")
    rows = [json.loads(line) for line in codes_file(data).read_text().splitlines()]
    assert len(rows) == 6
    _, images = read_images(data, 64)
    expected = tok.encode(images.float() / 127.5 - 1).flatten(1).tolist()
    for row, src, codes in zip(rows, [json.loads(x) for x in data.read_text().splitlines()], expected):
        assert row["id"] == src["id"] and row["text"] == src["text"]
        assert [int(c) for c in row["code"].split()] == codes
    assert (tmp_path / "run" / "draw" / "final" / "model.safetensors").is_file()


def test_bad_rows_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "image": "x.png"}\n')
    with pytest.raises(OFAError, match=r"bad.jsonl, line 1: not a drawing row"):
        read_images(bad, 64)
    with pytest.raises(OFAError, match="no such file"):
        read_images(tmp_path / "none.jsonl", 64)
