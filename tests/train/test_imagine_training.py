"""Text-to-image training: stage 1 (cross-entropy on the codes of the original's coco_vqgan rows,
in code mode) and stage 2 (CLIP-reward SCST: sampled grids decoded by the VQGAN, rewarded by
CLIP against the caption, leave-one-out baseline)."""

from __future__ import annotations

import math

import pytest
import torch

from openofa import clip, vqgan
from openofa.data import build_dataset
from openofa.train import TrainConfig
from openofa.train.trainer import Trainer, build_criterion
from openofa.train.scst import leave_one_out_advantages
from train_support import micro_model, train_config

# the English vocabulary (image codes) and a 2 x 2 code grid
FULL_VOCAB = dict(vocab_size=59457, num_bins=1000, code_dict_size=8192, code_image_size=16, image_bucket_size=42)


def coco_vqgan(tmp_path, n=4):
    """Rows as the original's coco_vqgan_train.tsv: id, image codes, caption (--selected-cols 0,2,1)."""
    rows = [f"{i}\t{' '.join(str(97 * i + 13 * k) for k in range(4))}\ta {c} square on a table\n"
            for i, c in enumerate(["red", "blue", "green", "yellow"][:n])]
    path = tmp_path / "coco_vqgan_train.tsv"
    path.write_text("".join(rows))
    return path


def test_stage1_rows_become_code_targets_and_train(tmp_path):
    ds = build_dataset("imagine", coco_vqgan(tmp_path))
    s = ds[1]
    code_0 = 59457 - 1000 - 8192
    assert s["target"].tolist() == [code_0 + 97 + 13 * k for k in range(4)] + [2]
    batch = ds.collater([ds[0], ds[1]])
    assert batch["net_input"]["code_masks"].tolist() == [True, True]
    model = micro_model(**FULL_VOCAB)
    before = model.decoder.code_layernorm_embedding.weight.detach().clone()
    cfg = train_config(tmp_path / "run", model="tiny", task="imagine", batch_size=2, update_freq=1, max_epoch=1,
                       max_update=2, label_smoothing=0.0, constraint_range="50265,58457")
    summary = Trainer(cfg, model, ds).fit()
    assert summary["num_updates"] == 2 and math.isfinite(summary["last"]["loss"])
    assert not torch.equal(model.decoder.code_layernorm_embedding.weight, before)


@pytest.fixture()
def reward_models(tmp_path):
    import yaml
    from safetensors.torch import save_file

    torch.manual_seed(3)
    vq_cfg = dict(ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[2], z_channels=16,
                  resolution=16, in_channels=3, out_ch=3)
    vq = vqgan.GumbelVQ(vqgan.VQGANConfig(embed_dim=8, n_embed=8192, **{k: tuple(v) if isinstance(v, list) else v
                                                                        for k, v in vq_cfg.items()}))
    (tmp_path / "vqgan").mkdir()
    torch.save({"state_dict": vq.state_dict()}, tmp_path / "vqgan" / "last.ckpt")
    (tmp_path / "vqgan" / "model.yaml").write_text(yaml.safe_dump(
        {"model": {"target": "taming.models.vqgan.GumbelVQ", "params": {"embed_dim": 8, "n_embed": 8192,
                                                                        "ddconfig": vq_cfg}}}))
    c = clip.CLIP(clip.CLIPConfig(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=64,
                                  vision_patch_size=8, transformer_width=64, transformer_heads=1, transformer_layers=1))
    for p in c.parameters():
        torch.nn.init.normal_(p, std=0.3)
    save_file({k: v.contiguous() for k, v in c.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    return str(tmp_path / "vqgan"), str(tmp_path / "clip.safetensors")


def test_stage2_clip_reward_scst(tmp_path, reward_models):
    vq_path, clip_path = reward_models
    ds = build_dataset("imagine", coco_vqgan(tmp_path, 2))
    batch = ds.collater([ds[0], ds[1]])
    model = micro_model(**FULL_VOCAB).train()
    cfg = TrainConfig(task="imagine", model="tiny", criterion="clip_scst", max_update=1,
                      scst={"beam_size": 3, "vqgan": vq_path, "clip": clip_path, "seed": 0}).validate("r.yaml")
    crit = build_criterion(cfg, model.config, ds)
    codes = crit.sample(model, batch)
    assert [len(g) for g in codes] == [3, 3] and all(len(c) == 5 for g in codes for c in g)  # 4 codes + eos
    rewards = crit.rewards(codes, batch["ref"])
    images = vqgan.to_pil(crit.vqgan.decode(torch.stack([c[:-1] for c in codes[0]]).view(3, 2, 2) - crit.code_0))
    want = clip.scores(crit.clip, images, batch["ref"][0]).tolist()
    assert rewards[0] == pytest.approx(want, abs=1e-6)
    out = crit(model, batch)
    assert math.isfinite(float(out.loss.detach())) and out.nsentences == 6 and out.ntokens == 30
    out.loss.backward()
    assert model.decoder.code_layernorm_embedding.weight.grad.abs().sum() > 0  # code mode was used
    assert leave_one_out_advantages([[1.0, 2.0, 3.0]]) == [[-1.5, 0.0, 1.5]]
    with pytest.raises(Exception, match="vqgan"):
        build_criterion(TrainConfig(task="imagine", criterion="clip_scst", max_update=1, scst={"clip": clip_path})
                        .validate("r.yaml"), model.config, ds)
