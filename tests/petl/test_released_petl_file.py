"""A file in the original's layout that carries PETL flags and keys (as its adapter and prefix
runs save: the whole model plus the added weights) loads strictly and gives the original's outputs."""

from __future__ import annotations

import pytest
import torch

from openofa.errors import OFAError
from test_original_methods import arrays, golden_batch, meta, model_of


@pytest.mark.parametrize("method", ["adapter", "prefix_projection"])
def test_official_file_with_petl_flags_loads_and_matches(tmp_path, method):
    from openofa.checkpoints import load_checkpoint, save_official
    from openofa.checkpoints.formats import get_format
    from openofa.model import model_from_state_dict

    src = model_of(method)
    path = save_official(tmp_path / f"{method}.pt", src.config, src.state_dict())
    ckpt = torch.load(path, weights_only=False)
    model_args = ckpt["cfg"]["model"]
    model_args = model_args if isinstance(model_args, dict) else vars(model_args)
    for flag, value in meta()["methods"][method]["extra_args"].items():
        assert model_args[flag] == value, flag
    config, sd, _ = load_checkpoint(path)
    model = model_from_state_dict(config, sd, source=str(path)).eval()
    b = golden_batch()
    rows = slice(0, 1) if meta()["methods"][method]["rows"] == "row0" else slice(None)
    with torch.no_grad():
        enc = model.encode(b["src_tokens"][rows], None, b["patch_images"][rows], b["patch_masks"][rows])
        logits = model.decode(b["prev_output_tokens"][rows], enc)
    valid = b["prev_output_tokens"][rows].ne(1)
    ids = arrays()["spread_vocab_indices"]
    diff = (logits[..., ids] - arrays()[f"{method}/logits_spread"])[valid].abs().max().item()
    assert diff < 1e-4
    with pytest.raises(OFAError, match="adapters or prefix tuning"):
        get_format("hf").save(tmp_path / "hf", config, sd)
