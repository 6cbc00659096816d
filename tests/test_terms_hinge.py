"""terms/hinge.py: QUAIL's hinge by hand, and zero when every distance exceeds the margin."""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn import terms as objectives


@pytest.mark.parametrize(
    ("distance", "expected"), [("mean_abs", 0.25), ("l2", (1 - math.sqrt(0.5)) / 2), ("linf", 0.25)]
)
def test_quail_hinge_by_hand(distance, expected) -> None:
    # z − z₀ at position 0 = (1, −3): d = 2 | √10 | 3, beyond the margin; at position 1 = (½, ½).
    logits = torch.tensor([[[1.0, -3.0], [0.5, 0.5], [9.0, 9.0]]], requires_grad=True)
    labels = torch.tensor([[-100, 0, 1]])
    loss = objectives.quail_hinge(logits, torch.zeros(1, 3, 2), labels, margin=1.0, distance=distance)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert torch.count_nonzero(logits.grad[0, 0]) == 0  # beyond the margin: no gradient
    assert torch.count_nonzero(logits.grad[0, 2]) == 0  # the last position predicts nothing
    if distance == "mean_abs":  # −(1/V)·sign(z − z₀) / positions
        torch.testing.assert_close(logits.grad[0, 1], torch.tensor([-0.25, -0.25]))


def test_quail_hinge_is_zero_when_every_distance_exceeds_the_margin() -> None:
    logits = torch.tensor([[[1.0, -3.0], [0.5, 0.5], [0.0, 0.0]]], requires_grad=True)
    loss = objectives.quail_hinge(logits, torch.zeros(1, 3, 2), torch.tensor([[-100, 0, 1]]), margin=0.4)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    with pytest.raises(ValueError, match="distance"):
        objectives.quail_hinge(logits, logits, torch.tensor([[-100, 0, 1]]), 1.0, distance="cosine")
