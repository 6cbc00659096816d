"""terms/entropy.py: the entropy term by hand."""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn import terms as objectives


def test_entropy_by_hand() -> None:
    # position 0: uniform over 2 tokens, H = ln 2; position 1: p = (3/4, 1/4)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[-100, 0, 1]])
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert objectives.entropy(logits, labels).item() == pytest.approx(-(math.log(2) + h1) / 2)
    masked = torch.tensor([[-100, -100, 1]])  # only position 1 predicts a label token
    assert objectives.entropy(logits, masked).item() == pytest.approx(-h1)
