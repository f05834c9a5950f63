"""Decoder rows whose target is image codes (``code_masks``): image positions on the code grid,
``image_pos_ln``, ``code_layernorm_embedding`` and the decoder's 2-D relative-position tables,
chosen row by row."""

from __future__ import annotations

import copy

import pytest
import torch

import openofa.model.decoder as decoder_module
from openofa.checkpoints.keys import decoder_image_position_idx, image_bucket_positions
from openofa.config import get_config
from openofa.model import build_model
from openofa.model.positions import code_position_ids, image_rel_bucket_of_ids

# small enough for CPU; a 4 x 4 code grid (code_image_size 32) so that sequences of 20 positions
# cover bos, the grid and the tail
SMALL = dict(encoder_layers=1, decoder_layers=2, encoder_embed_dim=64, decoder_embed_dim=64,
             encoder_ffn_embed_dim=128, decoder_ffn_embed_dim=128, encoder_attention_heads=4,
             decoder_attention_heads=4, vocab_size=700, num_bins=100, code_dict_size=128,
             code_image_size=32, max_source_positions=64, max_target_positions=64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(get_config("tiny", **SMALL)).eval()
    with torch.no_grad():  # every parameter random, so that each table and norm shows in the output
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 and p.numel() == 64 else 0.0))
    return m


def inputs(model, rows=3, src_len=9, tgt_len=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    src = torch.randint(4, 500, (rows, src_len), generator=g)
    src[0, -3:] = cfg.pad
    prev = torch.randint(cfg.code_0, cfg.code_0 + cfg.code_dict_size, (rows, tgt_len), generator=g)
    prev[:, 0] = cfg.bos
    prev[-1, -4:] = cfg.pad
    return src, prev


def test_index_tables_are_the_originals():
    ids = code_position_ids(torch.arange(1026), 128, 42)
    assert torch.equal(ids, decoder_image_position_idx(128, 42))
    table = image_bucket_positions(42)
    some = torch.cat([torch.arange(300), torch.tensor([1024, 1700, 1764])])
    assert torch.equal(image_rel_bucket_of_ids(some, some, 42), table[some][:, some])
    assert torch.equal(image_rel_bucket_of_ids(ids[:300], ids[:300], 42), table[ids[:300]][:, ids[:300]])


def text_twin(model):
    """A copy whose *text* path computes what ``model`` computes for code rows: the code tables
    moved into the text slots, with the original's precomputed index buffers."""
    twin = copy.deepcopy(model)
    d = twin.decoder
    cfg = model.config
    idx = decoder_image_position_idx(cfg.code_image_size, cfg.image_bucket_size)
    with torch.no_grad():
        n = d.embed_positions.weight.shape[0]
        d.embed_positions.weight.copy_(d.embed_image_positions.weight[idx[:n]])
        d.pos_ln.load_state_dict(d.image_pos_ln.state_dict())
        d.layernorm_embedding.load_state_dict(d.code_layernorm_embedding.state_dict())
        for text, image in zip(d.token_rel_pos_table_list, d.image_rel_pos_table_list):
            text.weight = image.weight
    return twin, image_bucket_positions(cfg.image_bucket_size), idx


@torch.no_grad()
def test_code_rows_use_the_image_tables(model, monkeypatch):
    src, prev = inputs(model)
    enc = model.encode(src)
    got = model.decode(prev, enc, code_masks=torch.ones(3, dtype=torch.bool))
    plain = model.decode(prev, enc)
    assert (got - plain).abs().max() > 1e-2
    # one step at a time with the cache, beams sharing an input
    cache = model.init_cache(enc, 2, code_masks=torch.ones(3, dtype=torch.bool))
    beams = prev.repeat_interleave(2, 0)
    steps = torch.stack([model.decode_step(beams[:, : t + 1], cache) for t in range(prev.shape[1])], 1)

    twin, table, idx = text_twin(model)
    monkeypatch.setattr(decoder_module, "token_rel_bucket", lambda q, k, *_: table[idx[q]][:, idx[k]])
    want = twin.decode(prev, twin.encode(src))
    valid = prev.ne(model.config.pad)
    assert torch.allclose(got[valid], want[valid], atol=1e-4, rtol=1e-4)
    assert torch.allclose(steps[::2][valid], want[valid], atol=1e-4, rtol=1e-4)
    assert torch.allclose(steps[1::2][valid], want[valid], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_rows_are_handled_one_by_one(model):
    src, prev = inputs(model)
    enc = model.encode(src)
    mixed = torch.tensor([False, True, False])
    got = model.decode(prev, enc, code_masks=mixed)
    plain = model.decode(prev, enc)
    valid = prev.ne(model.config.pad)
    assert torch.equal(got[0], plain[0]) and torch.equal(got[2][valid[2]], plain[2][valid[2]])
    alone = model.decode(prev[1:2], enc.index_select(torch.tensor([1])), code_masks=torch.tensor([True]))
    assert torch.allclose(got[1], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got[1], plain[1], atol=1e-2)
    # no flag set, or no flags at all: exactly the plain path
    assert torch.equal(model.decode(prev, enc, code_masks=torch.zeros(3, dtype=torch.bool)), plain)

    # the cache with mixed inputs and reordered / finished beams
    cache = model.init_cache(enc, 2, code_masks=mixed)
    beams = prev.repeat_interleave(2, 0)
    steps = [model.decode_step(beams[:, :1], cache)]
    for t in range(1, 6):
        steps.append(model.decode_step(beams[:, : t + 1], cache))
    order = torch.tensor([1, 0, 3, 2, 5, 4])
    cache.reorder(order)
    steps = torch.stack(steps, 1)
    assert torch.allclose(steps[::2], got[:, :6], atol=1e-4, rtol=1e-4)
    keep = torch.tensor([2, 3])  # only input 1 (the code row) goes on
    cache.reorder(keep)
    nxt = model.decode_step(beams[keep, :7], cache)
    assert torch.allclose(nxt, got[1, 6].expand(2, -1), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_code_layernorm_touches_only_code_rows(model):
    src, prev = inputs(model)
    m = copy.deepcopy(model)
    enc = m.encode(src)
    mixed = torch.tensor([True, False, False])
    before = m.decode(prev, enc, code_masks=mixed)
    m.decoder.code_layernorm_embedding.weight.mul_(1.5)
    m.decoder.code_layernorm_embedding.bias.add_(0.2)
    after = m.decode(prev, enc, code_masks=mixed)
    assert (after[0] - before[0]).abs().max() > 1e-2
    assert torch.equal(after[1:], before[1:])
    m.decoder.layernorm_embedding.weight.mul_(1.5)
    again = m.decode(prev, enc, code_masks=mixed)
    assert torch.equal(again[0], after[0]) and (again[1] - after[1]).abs().max() > 1e-2


def test_code_masks_must_match_the_rows(model):
    src, prev = inputs(model)
    with pytest.raises(ValueError, match="code_masks has 2 entries for 3"):
        model(src, None, None, None, prev, code_masks=torch.tensor([True, False]))
