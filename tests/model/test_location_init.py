"""``location_embedding_init``: how training from scratch starts the rows of the location tokens."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from openofa.config import get_config
from openofa.errors import OFAError
from openofa.model import build_model


def test_fourier_rows_are_smooth_in_the_bin_number():
    cfg = get_config("mini")
    assert cfg.location_embedding_init == "fourier"
    torch.manual_seed(0)
    model = build_model(cfg)
    table = model.encoder.embed_tokens.weight.detach()
    bins = table[cfg.bin_0:cfg.bin_0 + cfg.num_bins]
    assert torch.allclose(bins.norm(dim=1), torch.ones(cfg.num_bins), atol=1e-5)
    sim = bins @ bins.t()
    for k in (0, 20, cfg.num_bins - 1):  # similarity falls with the distance between bins (near ones)
        near = [float(sim[k, j]) for j in sorted(range(cfg.num_bins), key=lambda j: abs(j - k))[:5]]
        assert near[0] == pytest.approx(1.0, abs=1e-5) and all(a > b + 0.05 for a, b in zip(near[::2], near[2::2]))
    # the output projection is tied: the decoder scores bins against the same rows
    assert model.decoder.output_projection.weight.data_ptr() == model.encoder.embed_tokens.weight.data_ptr()
    # text rows are untouched by it: the same as a normal-init build from the same seed
    torch.manual_seed(0)
    plain = build_model(dataclasses.replace(cfg, location_embedding_init="normal"))
    plain_table = plain.encoder.embed_tokens.weight.detach()
    assert torch.equal(plain_table[: cfg.bin_0], table[: cfg.bin_0])
    assert not torch.allclose(plain_table[cfg.bin_0:], bins)


def test_unknown_init_is_refused():
    with pytest.raises(OFAError, match="location_embedding_init"):
        build_model(dataclasses.replace(get_config("mini"), location_embedding_init="zeros"))
