"""The decoder's image-code mode against the original's teacher-forced logits on a 32x32 code
grid (OFA-tiny, recipe weights, code_image_size 256, fixture ``fixtures/t2i``), and the cached
step path against teacher forcing on that grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from openofa.checkpoints.recipe import recipe_state_dict
from openofa.config import get_config
from openofa.model import build_model

FIX = Path(__file__).parent.parent / "fixtures" / "t2i" / "t2i_teacher_forced.npz"


@pytest.fixture(scope="module")
def case():
    return np.load(FIX)


@pytest.fixture(scope="module")
def model():
    cfg = get_config("tiny", code_image_size=256)
    m = build_model(cfg)
    own = m.state_dict()
    m.load_state_dict({k: v for k, v in recipe_state_dict(cfg).items() if k in own})
    return m.eval()


@pytest.fixture(scope="module")
def logits(model, case):
    with torch.no_grad():
        return model(torch.from_numpy(case["src_tokens"]), None, None, None,
                     torch.from_numpy(case["prev_output_tokens"]), code_masks=torch.from_numpy(case["code_masks"]))


def test_teacher_forced_code_logits_equal_the_original(logits, case):
    assert logits.shape == (2, 1025, 59457)
    idx = torch.from_numpy(case["fixed_vocab_indices"])
    np.testing.assert_allclose(logits[:, :, idx].numpy(), case["logits_at_fixed_indices"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[:, -1:].numpy(), case["logits_last_position_full"], atol=1e-4, rtol=0)
    code = logits[:, :2, 50265:58457]
    np.testing.assert_allclose(code.numpy(), case["code_range_logits_positions_0_2"], atol=1e-4, rtol=0)
    lp = torch.log_softmax(logits[:, ::16], -1)
    vals, ids = lp.topk(20)
    np.testing.assert_allclose(vals.numpy(), case["log_softmax_top20_values"], atol=1e-4, rtol=0)
    assert (ids.numpy() == case["log_softmax_top20_indices"]).mean() > 0.999  # near-ties may swap


def test_text_mode_would_differ(model, case, logits):
    """The code mode is what makes the match: the same tokens decoded as text rows differ."""
    src = torch.from_numpy(case["src_tokens"])
    prev = torch.from_numpy(case["prev_output_tokens"])[:, :40]
    with torch.no_grad():
        text = model(src, None, None, None, prev)
    assert (text - logits[:, :40]).abs().max() > 0.1


def test_cached_steps_follow_teacher_forcing_on_the_grid(model, case, logits):
    src = torch.from_numpy(case["src_tokens"])
    prev = torch.from_numpy(case["prev_output_tokens"])
    with torch.no_grad():
        enc = model.encode(src)
        cache = model.init_cache(enc, 1, code_masks=torch.ones(2, dtype=torch.bool))
        steps = [model.decode_step(prev[:, : t + 1], cache) for t in range(48)]
    torch.testing.assert_close(torch.stack(steps, 1), logits[:, :48], atol=1e-4, rtol=1e-4)
