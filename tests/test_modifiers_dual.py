"""modifiers/dual.py: PDU's dual ascent of the retain weight λ, one step by hand (the step at the
current λ, then λ's update), its clamp at 0 and warm-up, the recipe's refusals and the record."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from helpers import assert_one_sgd_step, make_trainer, with_

from llm_unlearn.modifiers import MODIFIERS
from llm_unlearn.recipe import RecipeError, validate_recipe
from llm_unlearn.terms import gdr
from llm_unlearn.terms.pdu import pdu
from llm_unlearn.trainer import training_config

LR, LAMBDA0 = 0.1, 0.7


def dual_trainer(tok, tmp_path, **dual):
    return make_trainer(
        tok, tmp_path, "pdu", optim="sgd", learning_rate=LR, max_steps=1, lr_scheduler_type="constant",
        max_grad_norm=0.0, retain_weight=LAMBDA0,
        modifiers={"dual": {"step_size": 0.3, "warmup_epochs": 0, **dual}},
    )  # fmt: skip


def hand_step(trainer, weight: float) -> tuple[object, float]:
    """θ₀'s copy with ∇(PDU + weight·GDR) on it, and the retain loss at θ₀."""
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    f = manual(input_ids=batch["forget_input_ids"], attention_mask=batch["forget_attention_mask"]).logits
    r = manual(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits
    retain = gdr(r, batch["retain_labels"])
    (pdu(f, batch["forget_labels"]) + weight * retain).backward()
    return manual, retain.item()


@pytest.mark.parametrize("epsilon", [0.5, 100.0])
def test_a_dual_step_trains_at_lambda_then_moves_it_by_the_constraints_violation(
    epsilon, tok, tmp_path
) -> None:
    """θ₁ = θ₀ − lr·∇(PDU + λ₀·GDR), then λ₁ = max(0, λ₀ + η·(L_r(θ₀) − ε)): the retain loss of a
    random tiny model (≈ ln V) is above ε = 0.5, so λ grows; below ε = 100, so λ falls to its floor 0."""
    trainer = dual_trainer(tok, tmp_path, epsilon=epsilon)
    manual, retain = hand_step(trainer, LAMBDA0)
    assert_one_sgd_step(trainer, manual, LR, every_parameter=True)
    expected = max(0.0, LAMBDA0 + 0.3 * (retain - epsilon))
    assert trainer.retain_weight == pytest.approx(expected, rel=1e-5)
    assert (expected > LAMBDA0) if epsilon == 0.5 else expected == 0.0


def test_the_step_reads_the_current_lambda_and_warm_up_keeps_it(tok, tmp_path) -> None:
    """A λ the ascent has moved is the one the next step trains with; before `warmup_epochs` epochs
    it does not move."""
    trainer = dual_trainer(tok, tmp_path, epsilon=0.5, warmup_epochs=1)
    trainer.retain_weight = 0.2
    manual, _ = hand_step(trainer, 0.2)
    assert_one_sgd_step(trainer, manual, LR, every_parameter=True)
    assert trainer.retain_weight == 0.2


def test_the_recipe_turns_it_on_for_methods_with_a_retain_term(tmp_path) -> None:
    recipe = validate_recipe(with_(method=[{"name": "pdu", "dual": {"epsilon": 0.5}}, {"name": "pdu"}]))
    on, off = recipe.method
    assert on.run_name == "pdu+dual" and off.run_name == "pdu"
    config = training_config(recipe, on, tmp_path)
    assert config.modifiers == {"dual": {"epsilon": 0.5, "step_size": 1.0, "warmup_epochs": 0}}
    assert training_config(recipe, off, tmp_path).modifiers == {}
    refused = {
        "ceu": r"method\.0.*dual constrains the retain term; 'ceu' has none",
        "oeu": r"method\.0.*dual and 'oeu'.s gradient projection both take the training step over",
    }
    for name, message in refused.items():
        with pytest.raises(RecipeError, match=message):
            validate_recipe(with_(method=[{"name": name, "dual": {"epsilon": 0.5}}]))
    with pytest.raises(RecipeError, match=r"method\.0\.dual\.epsilon: required field is missing"):
        validate_recipe(with_(method=[{"name": "pdu", "dual": {}}]))


def test_the_record_holds_the_lambda_reached_and_the_card_says_it() -> None:
    recipe = validate_recipe(with_(method=[{"name": "npo_gdr", "dual": {"epsilon": 2.0, "step_size": 0.5}}]))
    args = training_config(recipe, recipe.method[0], Path("/tmp/unused"))
    dual = MODIFIERS.get("dual")
    record = dual.record(recipe.method[0].dual, args, type("T", (), {"retain_weight": 3.25})())
    assert record == {"dual_epsilon": 2.0, "dual_step_size": 0.5, "dual_lambda": 3.25}
    assert dual.hyper_parameters(record) == record
    assert dual.facts(record) == [
        ("PDU dual", "retain loss ≤ 2.0 enforced by dual ascent (step 0.5); final retain weight λ 3.25")
    ]
    assert dual.facts({}) == [] and dual.hyper_parameters({}) == {}  # a run of an older version
