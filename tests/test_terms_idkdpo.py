"""IdkDPO (TOFU): value and gradient by hand, and one trainer step by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import assert_one_sgd_step, make_trainer

from llm_unlearn.terms import gdr, sequence_nll
from llm_unlearn.terms.idk import idk_pairs, refusal_texts
from llm_unlearn.terms.idkdpo import idkdpo


def test_idkdpo_value_and_gradient_by_hand() -> None:
    """nll_idk 3 (θ₀: 4), nll_answer 5 (θ₀: 2): margin = (4 − 3) − (2 − 5) = 4; β = 0.5:
    L = −log σ(2) = ln(1 + e^−2); dL/dnll_idk = β(1 − σ(2)), dL/dnll_answer = −β(1 − σ(2))."""
    nll_idk = torch.tensor([3.0], requires_grad=True)
    nll_answer = torch.tensor([5.0], requires_grad=True)
    loss = idkdpo(nll_idk, torch.tensor([4.0]), nll_answer, torch.tensor([2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    loss.backward()
    slope = 0.5 * (1 - 1 / (1 + math.exp(-2)))
    assert nll_idk.grad.item() == pytest.approx(slope, rel=1e-6)
    assert nll_answer.grad.item() == pytest.approx(-slope, rel=1e-6)
    # at θ = θ₀ the margin is 0: log 2
    at_ref = idkdpo(torch.tensor([3.0]), torch.tensor([3.0]), torch.tensor([5.0]), torch.tensor([5.0]))
    assert at_ref.item() == pytest.approx(math.log(2))


def test_one_idkdpo_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇(IdkDPO + λ·GDR) with θ₀'s log-probs from the frozen reference, which stays."""
    lr, weight = 0.5, 0.7
    trainer = make_trainer(
        tok, tmp_path, "idkdpo", optim="sgd", learning_rate=lr, max_steps=1, lr_scheduler_type="constant",
        max_grad_norm=0.0, retain_weight=weight, term_params={"idkdpo": {"beta": 0.5}},
    )  # fmt: skip
    ref_before = [p.detach().clone() for p in trainer.ref_model.parameters()]
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    forget = {k: batch[f"forget_{k}"] for k in ("input_ids", "attention_mask")} | {
        "index": batch["forget_index"]
    }
    pairs = idk_pairs(forget, tok, refusal_texts(None), 0.5, 0)

    def nll(model, seq):
        x = {"input_ids": seq["input_ids"], "attention_mask": seq["attention_mask"]}
        return sequence_nll(model(**x).logits, seq["labels"])

    with torch.no_grad():
        ref = {view: nll(trainer.ref_model, seq) for view, seq in pairs.items()}
    loss = idkdpo(nll(manual, pairs["idk"]), ref["idk"], nll(manual, pairs["answer"]), ref["answer"], 0.5)
    r = manual(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits
    (loss + weight * gdr(r, batch["retain_labels"])).backward()
    assert_one_sgd_step(trainer, manual, lr)
    for a, b in zip(trainer.ref_model.parameters(), ref_before, strict=True):
        assert torch.equal(a, b)
