"""WGA (Wang et al. 2025): value and gradient by hand, and one trainer step by hand."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import LABELS, LOGITS, assert_reference_free_step

from llm_unlearn.terms import ga
from llm_unlearn.terms.wga import wga


def test_wga_value_and_gradient_by_hand() -> None:
    """β = 2: position 0 predicts y = 0 with p = 1/2 (weight 1/4), position 1 predicts y = 1 with
    p = 3/4 (weight 9/16). L = −(1/4·ln 2 + 9/16·ln 4/3)/2; the weight is a constant, so
    dL/dz_t = −w_t/2·(p_t − e_{y_t}); the last position predicts nothing."""
    w0, w1 = 0.25, 9 / 16
    logits = LOGITS.clone().requires_grad_(True)
    loss = wga(logits, LABELS, beta=2.0)
    assert loss.item() == pytest.approx(-(w0 * math.log(2) + w1 * math.log(4 / 3)) / 2, rel=1e-6)
    loss.backward()
    expected = torch.tensor(
        [[[-w0 / 2 * -0.5, -w0 / 2 * 0.5], [-w1 / 2 * 0.25, -w1 / 2 * -0.25], [0.0, 0.0]]]
    )
    torch.testing.assert_close(logits.grad, expected)


def test_wga_with_beta_zero_is_gradient_ascent() -> None:
    torch.testing.assert_close(wga(LOGITS, LABELS, beta=0.0), ga(LOGITS, LABELS))


def test_one_wga_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇(WGA + λ·GDR); reference-free: no θ₀ copy and no NLL cache."""
    assert_reference_free_step(tok, tmp_path, "wga", lambda f, y: wga(f, y, 0.5), beta=0.5)
