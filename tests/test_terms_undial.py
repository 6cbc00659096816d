"""UNDIAL (Dong et al. 2024): value and gradient by hand, and one trainer step by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import assert_one_sgd_step, make_trainer

from llm_unlearn.terms.undial import undial

# One predicted position: position 0 predicts label 0 (the second label); vocabulary of 2.
LABELS = torch.tensor([[7, 0]])
REF = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])
LOGITS = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])


def test_undial_value_and_gradient_by_hand() -> None:
    """γ = ln 3: the target z₀ − γ·e_0 = (−ln 3, 0) gives q = (1/4, 3/4); θ predicts p = (1/2, 1/2).
    KL(q‖p) = 1/4·ln(1/2) + 3/4·ln(3/2); dKL/dz = p − q = (1/4, −1/4)."""
    logits = LOGITS.clone().requires_grad_(True)
    loss = undial(logits, REF, LABELS, math.log(3))
    assert loss.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[[0.25, -0.25], [0.0, 0.0]]]))


def test_undial_is_zero_where_theta_already_predicts_the_target() -> None:
    logits = torch.tensor([[[0.0, math.log(3)], [1.0, 1.0]]])  # p = (1/4, 3/4) = q at the predicting position
    assert undial(logits, REF, LABELS, math.log(3)).item() == pytest.approx(0.0, abs=1e-7)
    # γ = 0 is plain self-distillation: zero at θ = θ₀
    assert undial(REF, REF, LABELS, 0.0).item() == pytest.approx(0.0, abs=1e-7)


def test_one_undial_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇UNDIAL with θ₀'s logits from the frozen reference, which does not move."""
    lr = 0.5
    trainer = make_trainer(
        tok, tmp_path, "undial", optim="sgd", learning_rate=lr, max_steps=1, lr_scheduler_type="constant",
        max_grad_norm=0.0, term_params={"undial": {"strength": 3.0}},
    )  # fmt: skip
    assert trainer.ref_model is not None and trainer._ref_nll is None
    ref_before = [p.detach().clone() for p in trainer.ref_model.parameters()]
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    x = {"input_ids": batch["forget_input_ids"], "attention_mask": batch["forget_attention_mask"]}
    with torch.no_grad():
        ref = trainer.ref_model(**x).logits
    undial(manual(**x).logits, ref, batch["forget_labels"], 3.0).backward()
    assert_one_sgd_step(trainer, manual, lr, every_parameter=True)
    for a, b in zip(trainer.ref_model.parameters(), ref_before, strict=True):
        assert torch.equal(a, b)
