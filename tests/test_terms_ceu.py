"""CE-U (Yang 2025): value and gradient by hand, the first answer tokens left out, one trainer step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import LABELS, LOGITS, assert_one_sgd_step, make_trainer

from llm_unlearn.terms.ceu import ceu


def test_ceu_value_and_gradient_by_hand() -> None:
    """Position 0: z = (0, 0), y = 0, so q = (0, 1) and CE = −ln p₁ = ln 2, gradient p − q = (1/2, −1/2).
    Position 1: z = (0, ln 3), y = 1, q = (1, 0), CE = −ln 1/4 = ln 4, gradient (−3/4, 3/4). The mean
    halves both; the first label (never predicted) is the one n = 1 drops, so both positions count."""
    logits = LOGITS.clone().requires_grad_(True)
    loss = ceu(logits, LABELS)
    assert loss.item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)
    loss.backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[[0.25, -0.25], [-0.375, 0.375], [0.0, 0.0]]]))


def test_ceu_keeps_the_ratios_of_the_other_tokens() -> None:
    """Vocabulary of 3, z = (0, ln 2, ln 3), y = 0: q = (0, 2/5, 3/5), p = (1/6, 2/6, 3/6), so
    CE = −(2/5·ln 1/3 + 3/5·ln 1/2) and the gradient p − q = (1/6, −1/15, −1/10)."""
    logits = torch.tensor([[[0.0, math.log(2), math.log(3)], [0.0, 0.0, 0.0]]], requires_grad=True)
    loss = ceu(logits, torch.tensor([[7, 0]]), ignore_first_n_answer_tokens=0)
    assert loss.item() == pytest.approx(-(0.4 * math.log(1 / 3) + 0.6 * math.log(0.5)), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(logits.grad[0, 0], torch.tensor([1 / 6, -1 / 15, -0.1]))


def test_ceu_drops_the_first_n_answer_tokens_after_a_masked_prompt() -> None:
    """Prompt masked: the answer's first token (0, predicted at position 0) is dropped with n = 1,
    leaving position 1 (ln 4); n = 0 keeps both, n = 2 none (the loss is then 0)."""
    labels = torch.tensor([[-100, 0, 1]])
    assert ceu(LOGITS, labels, 1).item() == pytest.approx(math.log(4), rel=1e-6)
    assert ceu(LOGITS, labels, 0).item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)
    assert ceu(LOGITS, labels, 2).item() == 0.0


def test_one_ceu_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇CE-U: no retain term, no reference."""
    lr = 0.5
    trainer = make_trainer(
        tok, tmp_path, "ceu", optim="sgd", learning_rate=lr, max_steps=1, lr_scheduler_type="constant",
        max_grad_norm=0.0, term_params={"ceu": {"ignore_first_n_answer_tokens": 2}},
    )  # fmt: skip
    assert trainer.ref_model is None and trainer._ref_nll is None
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    f = manual(input_ids=batch["forget_input_ids"], attention_mask=batch["forget_attention_mask"]).logits
    ceu(f, batch["forget_labels"], 2).backward()
    assert_one_sgd_step(trainer, manual, lr, every_parameter=True)
