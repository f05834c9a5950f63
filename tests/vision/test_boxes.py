"""Box parsing, validation, IoU / grounding accuracy and clamping."""

from __future__ import annotations

import pytest
import torch

from openofa.errors import OFAError
from openofa.vision import box_iou, clamp_box, format_box, grounding_hits, parse_box, validate_box


def test_parse_box():
    assert parse_box("20,30,80,100") == (20.0, 30.0, 80.0, 100.0)
    assert parse_box(" 200.5, 100.25 ,440.0,340.75\n") == (200.5, 100.25, 440.0, 340.75)
    assert parse_box(format_box([1.5, 2, 3, 4.25])) == (1.5, 2.0, 3.0, 4.25)


@pytest.mark.parametrize(
    "text, match",
    [
        ("1,2,3", "4 comma-separated"),
        ("1,2,3,4,5", "4 comma-separated"),
        ("1,2,x,4", "not a number"),
        ("1,2,nan,4", "non-finite"),
        ("", "4 comma-separated"),
    ],
)
def test_parse_box_errors(text, match):
    with pytest.raises(OFAError, match=match):
        parse_box(text)


def test_parse_box_names_source():
    with pytest.raises(OFAError, match="refcoco.tsv line 3: box '1,2' "):
        parse_box("1,2", name="refcoco.tsv line 3")


def test_validate_box_ok():
    assert validate_box((0, 0, 200, 150), 200, 150) == (0.0, 0.0, 200.0, 150.0)
    assert validate_box(torch.tensor([1.0, 2.0, 3.0, 4.0]), 10, 10) == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    "box, match",
    [
        ((50, 10, 40, 20), r"box \(50, 10, 40, 20\) is empty or inverted: x1 must be < x2"),
        ((10, 10, 10, 20), "x1 must be < x2"),
        ((10, 30, 40, 20), "y1 must be < y2"),
        ((-1, 0, 10, 10), r"box \(-1, 0, 10, 10\) is outside the image of size 200x150"),
        ((0, 0, 200.5, 10), r"outside the image of size 200x150"),
        ((0, 0, 10, 151), r"outside the image of size 200x150"),
        ((0, 0, 10), "4 values"),
    ],
)
def test_validate_box_errors(box, match):
    with pytest.raises(OFAError, match=match):
        validate_box(box, 200, 150)


def test_iou_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0  # disjoint
    batch = box_iou(torch.tensor([[0.0, 0, 10, 10], [0, 0, 2, 2]]), torch.tensor([[0.0, 0, 10, 10], [1, 1, 3, 3]]))
    assert batch.shape == (2,) and batch.tolist() == pytest.approx([1.0, 1 / 7])


def test_grounding_hits_match_original_rule():
    # The original divides by (union + 1e-6) in float32: for a union of 200 the epsilon is
    # absorbed and IoU 0.5 counts (>=); for a union of 2 it is not, and IoU 0.5 misses.
    assert grounding_hits((0, 0, 10, 10), (0, 0, 10, 20)) == 1.0
    assert grounding_hits((0, 0, 1, 1), (0, 0, 1, 2)) == 0.0
    assert grounding_hits((0, 0, 10, 10), (0, 0, 10, 21)) == 0.0
    assert grounding_hits((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    # Disjoint but with a negative*negative "intersection": rejected by the width/height test.
    assert grounding_hits((0, 0, 10, 10), (20, 20, 30, 30), threshold=-1.0) == 0.0
    hits = grounding_hits(torch.tensor([[0.0, 0, 10, 10], [0, 0, 1, 1]]), torch.tensor([[1.0, 1, 10, 10], [5, 5, 9, 9]]))
    assert hits.tolist() == [1.0, 0.0] and hits.mean().item() == 0.5


def test_clamp_box():
    assert clamp_box((-3.5, 10, 210, 160), 200, 150) == [0.0, 10.0, 200.0, 150.0]
    t = clamp_box(torch.tensor([[-1.0, -1.0, 5.0, 500.0]]), 100, 100)
    assert t.tolist() == [[0.0, 0.0, 5.0, 100.0]]
    src = torch.tensor([-1.0, 0.0, 1.0, 1.0])
    clamp_box(src, 10, 10)
    assert src[0] == -1.0  # input not modified
    with pytest.raises(OFAError, match="4"):
        clamp_box(torch.zeros(3), 1, 1)
