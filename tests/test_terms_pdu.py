"""PDU's forget loss (Entesari et al. 2025): value and gradient by hand, one trainer step by hand."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import LABELS, LOGITS, assert_reference_free_step

from llm_unlearn.terms.pdu import pdu


def test_pdu_value_and_gradient_by_hand() -> None:
    """Position 0: z = (0, 0) is flat, 0. Position 1: z = (0, ln 3), max − mean = ln 3/2, squared
    (ln 3)²/4; L = (ln 3)²/8 over the two predicting positions. dL/dz at position 1 =
    1/2·2·(ln 3/2)·(e_1 − 1/2) = (ln 3/2)·(−1/2, 1/2); position 2 (z = (5, −5)) predicts nothing."""
    logits = LOGITS.clone().requires_grad_(True)
    loss = pdu(logits, LABELS)
    assert loss.item() == pytest.approx(math.log(3) ** 2 / 8, rel=1e-6)
    loss.backward()
    g = math.log(3) / 2
    torch.testing.assert_close(logits.grad, torch.tensor([[[0.0, 0.0], [-g / 2, g / 2], [0.0, 0.0]]]))


def test_pdu_reads_which_positions_are_labelled_not_the_labels() -> None:
    torch.testing.assert_close(pdu(LOGITS, torch.tensor([[7, 1, 0]])), pdu(LOGITS, LABELS))
    assert pdu(LOGITS, torch.tensor([[7, -100, 1]])).item() == pytest.approx(math.log(3) ** 2 / 4, rel=1e-6)


def test_one_pdu_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇(PDU + λ·GDR) at a fixed λ; reference-free."""
    assert_reference_free_step(tok, tmp_path, "pdu", pdu, lr=0.1)
