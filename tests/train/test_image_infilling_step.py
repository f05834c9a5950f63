"""Training on image-infilling batches: the collater's ``code_masks`` reach the decoder, so the code
rows train the decoder's image-code tables and not the text ones."""

from __future__ import annotations

import base64
import io

import torch

from openofa.data import build_dataset
from openofa.train.loss import LabelSmoothedCrossEntropy
from openofa.train.trainer import Trainer, _net_input
from train_support import micro_model, train_config

# the pretraining files need the full vocabulary (image codes, 1000 bins); a 2 x 2 code grid
FULL_VOCAB = dict(vocab_size=59457, num_bins=1000, code_dict_size=8192, code_image_size=16,
                  image_bucket_size=42)


def png_b64(size, color):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def image_file(tmp_path, n=4):
    rows = [[i, png_b64((64, 64), (40 * i, 90, 200)), " ".join(str(7 * i + k) for k in range(4))] for i in range(n)]
    path = tmp_path / "image_examples.tsv"
    path.write_text("".join("\t".join(str(c) for c in r) + "\n" for r in rows))
    return path


def test_code_rows_train_the_code_tables(tmp_path):
    ds = build_dataset("pretrain_image", image_file(tmp_path), patch_image_size=64)
    batch = ds.collater([ds[0], ds[1]])
    assert batch["net_input"]["code_masks"].tolist() == [True, True]
    model = micro_model(**FULL_VOCAB).train()
    net = _net_input(model, batch)
    assert "code_masks" in net
    out = LabelSmoothedCrossEntropy(0.1)(model(**net), batch, update_num=0)
    out.loss.backward()
    d = model.decoder
    assert d.code_layernorm_embedding.weight.grad.abs().sum() > 0
    assert d.image_rel_pos_table_list[0].weight.grad.abs().sum() > 0
    assert d.embed_image_positions.weight.grad.abs().sum() > 0
    for unused in (d.layernorm_embedding.weight, d.token_rel_pos_table_list[0].weight, d.pos_ln.weight):
        assert unused.grad is None or not unused.grad.any()


def test_a_training_step_on_image_infilling(tmp_path):
    ds = build_dataset("pretrain_image", image_file(tmp_path), patch_image_size=64)
    model = micro_model(**FULL_VOCAB)
    before = model.decoder.code_layernorm_embedding.weight.detach().clone()
    cfg = train_config(tmp_path / "run", model="tiny", batch_size=2, update_freq=1, max_epoch=1, max_update=2)
    summary = Trainer(cfg, model, ds).fit()
    assert summary["num_updates"] == 2 and summary["last"]["loss"] > 0
    assert not torch.equal(model.decoder.code_layernorm_embedding.weight, before)
