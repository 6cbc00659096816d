"""SimNPO (Fan et al. 2024): value and gradient by hand, and one trainer step by hand."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import LABELS, LOGITS, NLL, assert_reference_free_step

from llm_unlearn.terms.simnpo import simnpo


def sigmoid(a: float) -> float:
    return 1 / (1 + math.exp(-a))


@pytest.mark.parametrize("convention", ["paper", "open_unlearning"])
def test_simnpo_value_and_gradient_by_hand(convention) -> None:
    """One sequence, |y| = 2 predicted tokens, nll = ln(8/3) (test_objectives' point), β = 2, γ = 0.5.
    paper: a = β·nll/|y| − γ; open_unlearning: a = β·(nll/(|y|+1) − γ). L = −(2/β)·log σ(a) and
    dL/dz_t = −(2/β)·(1 − σ(a))·(da/dnll)·(p_t − e_{y_t}), p_0 = (1/2, 1/2) with y = 0 and
    p_1 = (1/4, 3/4) with y = 1; the last position predicts nothing."""
    beta, gamma = 2.0, 0.5
    if convention == "paper":
        a, da = beta * NLL / 2 - gamma, beta / 2
    else:
        a, da = beta * (NLL / 3 - gamma), beta / 3
    logits = LOGITS.clone().requires_grad_(True)
    loss = simnpo(logits, LABELS, beta, gamma, convention)
    assert loss.item() == pytest.approx(-(2 / beta) * math.log(sigmoid(a)), rel=1e-6)
    loss.backward()
    scale = -(2 / beta) * (1 - sigmoid(a)) * da
    expected = scale * torch.tensor([[[-0.5, 0.5], [0.25, -0.25], [0.0, 0.0]]])
    torch.testing.assert_close(logits.grad, expected)


def test_open_unlearning_divides_by_the_unshifted_labels_of_a_masked_prompt() -> None:
    """open-unlearning's SimNPO.compute_loss by hand on a batch whose prompts are masked: its
    denominator `(labels != -100).sum(-1)` counts unshifted labels, here 2 and 1 (= |y|, not |y|+1).
    Row 1 predicts tokens 0 and 1 (nll = ln 2 + ln 4/3); row 2 only token 1 (nll = ln 4/3)."""
    beta, gamma = 2.0, 0.5
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 1]])
    rows = [(math.log(2) + math.log(4 / 3), 2), (math.log(4 / 3), 1)]  # (nll, labels not -100)
    expected = -2 / beta * sum(math.log(sigmoid(beta * (v / n - gamma))) for v, n in rows) / 2
    loss = simnpo(LOGITS.repeat(2, 1, 1), labels, beta, gamma, "open_unlearning")
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    paper = simnpo(LOGITS.repeat(2, 1, 1), labels, beta, gamma, "paper")  # |y| = 2 and 1 too, γ unscaled
    hand = -2 / beta * sum(math.log(sigmoid(beta * v / n - gamma)) for v, n in rows) / 2
    assert paper.item() == pytest.approx(hand, rel=1e-6)


def test_simnpo_is_a_mean_over_sequences_and_zero_length_safe() -> None:
    two = simnpo(LOGITS.repeat(2, 1, 1), LABELS.repeat(2, 1), 2.0, 0.5)
    torch.testing.assert_close(two, simnpo(LOGITS, LABELS, 2.0, 0.5))
    empty = torch.full_like(LABELS, -100)
    assert torch.isfinite(simnpo(LOGITS, empty, 2.0, 0.5))


def test_one_simnpo_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇(SimNPO + λ·GDR); reference-free: no θ₀ copy and no NLL cache."""
    assert_reference_free_step(
        tok, tmp_path, "simnpo", lambda f, y: simnpo(f, y, 2.5, 0.5), beta=2.5, gamma=0.5
    )
