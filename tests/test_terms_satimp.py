"""SatImp (Yang et al. 2025): value and gradient by hand, and one trainer step by hand."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import LABELS, LOGITS, assert_reference_free_step

from llm_unlearn.terms.satimp import satimp
from llm_unlearn.terms.wga import wga


def test_satimp_value_and_gradient_by_hand() -> None:
    """β₁ = 2, β₂ = 1: weight p²·(1 − p) = 1/8 at position 0 (p = 1/2, y = 0) and 9/64 at position 1
    (p = 3/4, y = 1). L = −(1/8·ln 2 + 9/64·ln 4/3)/2 and dL/dz_t = −w_t/2·(p_t − e_{y_t})."""
    w0, w1 = 1 / 8, 9 / 64
    logits = LOGITS.clone().requires_grad_(True)
    loss = satimp(logits, LABELS, beta1=2.0, beta2=1.0)
    assert loss.item() == pytest.approx(-(w0 * math.log(2) + w1 * math.log(4 / 3)) / 2, rel=1e-6)
    loss.backward()
    expected = torch.tensor(
        [[[-w0 / 2 * -0.5, -w0 / 2 * 0.5], [-w1 / 2 * 0.25, -w1 / 2 * -0.25], [0.0, 0.0]]]
    )
    torch.testing.assert_close(logits.grad, expected)


def test_satimp_with_beta2_zero_is_wga() -> None:
    torch.testing.assert_close(satimp(LOGITS, LABELS, 3.0, 0.0), wga(LOGITS, LABELS, 3.0))


def test_one_satimp_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇(SatImp + λ·GDR); reference-free."""
    assert_reference_free_step(
        tok, tmp_path, "satimp", lambda f, y: satimp(f, y, 0.5, 2.0), beta1=0.5, beta2=2.0
    )
