"""Every named size builds with exactly the official key names and shapes."""

from __future__ import annotations

import pytest
import torch

from support import archs
from openofa.config import OFAConfig, get_config, list_sizes
from openofa.errors import OFAError
from openofa.model import build_model

COMPUTED = ("version", "token_rp_bucket", "image_rp_bucket", "image_position_idx")


@pytest.mark.parametrize("size", ["tiny", "medium", "base", "large", "huge"])
def test_state_dict_matches_official(size):
    info = archs()["archs"][f"ofa_{size}"]
    with torch.device("meta"):
        model = build_model(get_config(size))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = {k: tuple(s) for k, s, _ in info["state_dict_official"] if not k.endswith(COMPUTED)}
    assert ours == ref
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == info["num_parameters_official"]


@pytest.mark.parametrize("size", ["tiny", "medium", "base", "large", "huge"])
def test_config_matches_official_hyperparameters(size):
    hp = archs()["archs"][f"ofa_{size}"]["hyperparameters_after_arch_fn_with_official_flags"]
    cfg = get_config(size)
    for name in ("encoder_layers", "decoder_layers", "encoder_embed_dim", "encoder_attention_heads",
                 "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "resnet_type", "token_bucket_size",
                 "image_bucket_size", "attn_scale_factor", "max_source_positions", "vocab_size",
                 "scale_attn", "scale_fc", "scale_heads", "scale_resids", "code_image_size"):
        assert getattr(cfg, name) == hp[name], name
    assert OFAConfig.from_original({**hp, "arch": f"ofa_{size}"}) == cfg


def test_chinese_sizes_use_bert_vocabulary():
    for name in ("base-zh", "large-zh"):
        cfg = get_config(name)
        assert cfg.language == "zh" and cfg.vocab_size == 30325 and cfg.bin_0 == 29325
    assert set(list_sizes()) >= {"tiny", "medium", "base", "large", "huge", "base-zh", "large-zh"}


def test_unknown_size_is_a_clear_error():
    with pytest.raises(OFAError, match="unknown model size 'gigantic'.*tiny"):
        get_config("gigantic")


def test_too_long_source_is_refused(tiny_model):
    src = torch.full((1, tiny_model.config.max_source_positions + 1), 5)
    with pytest.raises(OFAError, match="at most 1024"):
        tiny_model.encode(src)


def test_scale_flags_off_removes_their_keys():
    cfg = get_config("tiny", scale_attn=False, scale_fc=False, scale_heads=False)
    with torch.device("meta"):
        keys = set(build_model(cfg).state_dict())
    only_official = set(archs()["archs"]["ofa_tiny"]["keys_only_with_official_flags"])
    assert keys.isdisjoint(only_official)


def test_small_trunk_width_and_blocks_round_trip_through_the_key_table():
    from openofa.checkpoints.keys import infer_from_state_dict, official_keys

    cfg = get_config("tiny", resnet_type="resnet-small", resnet_width=16)
    with torch.device("meta"):
        model = build_model(cfg)
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        k: tuple(s) for k, s in official_keys(cfg, computed=False).items()}
    assert model.encoder.embed_images.out_channels == 256
    inferred = infer_from_state_dict(sd)
    assert inferred["resnet_type"] == "resnet-small" and inferred["resnet_width"] == 16


def test_interpolate_position_reads_a_learnt_grid_at_a_larger_size():
    """The original's --interpolate-position: image positions learnt for a 256-pixel grid (16 x 16
    patches), bilinearly interpolated to a larger grid; smaller grids read the table as usual."""
    import dataclasses

    import torch.nn.functional as F

    from openofa.config import get_config
    from openofa.model import build_model
    from openofa.model.positions import image_position_ids

    torch.manual_seed(0)
    plain_cfg = get_config("tiny")
    cfg = dataclasses.replace(plain_cfg, interpolate_position=True, orig_patch_image_size=256)
    model = build_model(cfg).eval()
    enc = model.encoder
    table = enc.embed_image_positions
    same = enc.image_position_embeddings(16, 16, "cpu")
    assert torch.equal(same, table(image_position_ids(16, 16, cfg.image_bucket_size, "cpu")))
    big = enc.image_position_embeddings(30, 30, "cpu")
    grid = table(image_position_ids(16, 16, cfg.image_bucket_size, "cpu")).reshape(16, 16, -1)
    want = F.interpolate(grid.permute(2, 0, 1)[None], size=(30, 30), mode="bilinear")[0].permute(1, 2, 0)
    assert torch.equal(big, want.reshape(900, -1))
    assert torch.equal(big.reshape(30, 30, -1)[0, 0], want[0, 0]) and not torch.equal(
        big, table(image_position_ids(30, 30, cfg.image_bucket_size, "cpu")))
    # the whole model runs with it, and the flag travels through the official layout
    with torch.inference_mode():
        out = model(torch.tensor([[0, 5, 6, 2]]), patch_images=torch.randn(1, 3, 480, 480),
                    prev_output_tokens=torch.tensor([[0, 7]]))
    assert torch.isfinite(out).all()


def test_interpolate_position_travels_through_the_official_layout(tmp_path):
    import dataclasses

    from openofa.checkpoints import load_checkpoint, save_official
    from openofa.config import get_config
    from openofa.model import build_model

    cfg = dataclasses.replace(get_config("tiny"), interpolate_position=True, orig_patch_image_size=384,
                              disable_entangle=True)
    path = save_official(tmp_path / "ocr.pt", cfg, build_model(cfg).state_dict())
    back, _, _ = load_checkpoint(path)
    assert back.interpolate_position and back.orig_patch_image_size == 384
