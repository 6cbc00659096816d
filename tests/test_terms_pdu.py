"""PDU's forget loss (Entesari et al. 2025): value and gradient by hand, one trainer step by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import LABELS, LOGITS, assert_one_sgd_step, make_trainer

from llm_unlearn.terms import gdr
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
    lr, weight = 0.1, 0.7
    trainer = make_trainer(
        tok, tmp_path, "pdu", optim="sgd", learning_rate=lr, max_steps=1, lr_scheduler_type="constant",
        max_grad_norm=0.0, retain_weight=weight,
    )  # fmt: skip
    assert trainer.ref_model is None and trainer._ref_nll is None
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    f = manual(input_ids=batch["forget_input_ids"], attention_mask=batch["forget_attention_mask"]).logits
    r = manual(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits
    (pdu(f, batch["forget_labels"]) + weight * gdr(r, batch["retain_labels"])).backward()
    assert_one_sgd_step(trainer, manual, lr, every_parameter=True)
