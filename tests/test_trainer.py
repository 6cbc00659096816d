"""The trainer: every method changes the parameters it should and only those, and one step of
the trainer equals one step written by hand."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from conftest import tiny_llama
from helpers import FORGET, RETAIN, assert_one_sgd_step, make_trainer, with_, write
from peft import LoraConfig, get_peft_model

import llm_unlearn.trainer as trainer_module
from llm_unlearn import terms as objectives
from llm_unlearn.data.collate import ForgetRetainDataset, UnlearningCollator, chunk_texts
from llm_unlearn.methods import METHODS
from llm_unlearn.recipe import load_recipe
from llm_unlearn.terms import klr_muse, npo_muse
from llm_unlearn.trainer import UnlearningTrainer, training_config
from llm_unlearn.unlearning_config import UnlearningConfig


def trains_every_parameter_on_the_batch(method: str) -> bool:
    """A method whose terms read only the batch's own windows and restrict no parameters; the others
    (RMU trains a few MLPs, IdkNLL/IdkDPO add refusal text) have their own test of what they change."""
    terms = [objectives.TERMS.get(t) for t in METHODS.get(method).terms]
    base = objectives.Term
    return all(type(t).trainable is base.trainable and type(t).sequences is base.sequences for t in terms)


@pytest.mark.parametrize("method", [m for m in METHODS.names() if trains_every_parameter_on_the_batch(m)])
def test_every_method_changes_what_it_should_and_only_that(method, tok, tmp_path) -> None:
    trainer = make_trainer(tok, tmp_path, method)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    ref_before = None
    if trainer.ref_model is not None:
        ref_before = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()
    seen = {t for ids in tok(FORGET + RETAIN)["input_ids"] for t in ids}
    for name, param in trainer.model.named_parameters():
        if name == "model.embed_tokens.weight":
            unseen = sorted(set(range(len(tok))) - seen)
            # rows of tokens that never occur get no gradient, so Adam (no weight decay) leaves them
            assert torch.equal(param[unseen], before[name][unseen]), "embeddings of unseen tokens moved"
            assert not torch.equal(param[sorted(seen)], before[name][sorted(seen)])
        else:
            assert not torch.equal(param, before[name]), f"{method}: {name} did not change"
    if ref_before is not None:
        for name, param in trainer.ref_model.named_parameters():
            assert torch.equal(param, ref_before[name]), f"{method}: the reference model moved ({name})"


def test_klr_reference_is_frozen_and_in_eval_mode(tok, tmp_path) -> None:
    trainer = make_trainer(tok, tmp_path, "ga_klr")
    assert not trainer.ref_model.training
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    assert make_trainer(tok, tmp_path, "npo").ref_model is None  # NPO caches nll(θ₀), no second model


def test_npo_reference_cache_is_the_initial_model(tok, tmp_path) -> None:
    trainer = make_trainer(tok, tmp_path, "npo")
    model = trainer.model.eval()
    batch = UnlearningCollator(tok.pad_token_id)([trainer.train_dataset[i] for i in range(len(FORGET))])
    with torch.no_grad():
        logits = model(
            input_ids=batch["forget_input_ids"], attention_mask=batch["forget_attention_mask"]
        ).logits
    expected = objectives.sequence_nll(logits, batch["forget_labels"])
    torch.testing.assert_close(trainer._ref_nll, expected)


def hand_loss(trainer, model, batch, method: str, weight: float = 1.0) -> torch.Tensor:
    """The method's loss written from `objectives` alone, for comparison with the trainer."""
    spec, args = METHODS.get(method), trainer.args
    forget = {"input_ids": batch["forget_input_ids"], "attention_mask": batch["forget_attention_mask"]}
    logits = model(**forget).logits
    if spec.forget_loss == "ga":
        loss = objectives.ga(logits, batch["forget_labels"])
    else:
        loss = objectives.npo(logits, batch["forget_labels"], trainer._ref_nll[batch["forget_index"]], 0.1)
    quail = args.modifiers.get("quail")
    if quail:
        with torch.no_grad():
            ref_logits = trainer.ref_model(**forget).logits
        hinge = objectives.quail_hinge(logits, ref_logits, batch["forget_labels"], quail["margin"])
        loss = loss + quail["weight"] * hinge
    if spec.retain_loss == "gdr":
        r_logits = model(
            input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]
        ).logits
        loss = loss + weight * objectives.gdr(r_logits, batch["retain_labels"])
    return loss


STEP_CASES = {
    "ga": ("ga", {}),
    "ga_gdr": ("ga_gdr", {}),
    "npo_gdr": ("npo_gdr", {}),
    "sure": ("ga_gdr", {"modifiers": {"sure": {"percentile": 80.0}}}),
    "quail": ("ga_gdr", {"modifiers": {"quail": {"weight": 0.5, "margin": 50.0}}}),
}


@pytest.mark.parametrize("case", STEP_CASES)
def test_one_step_equals_a_hand_written_sgd_step(case, tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr · ∇(L_f + λ_h·hinge + λ·L_r) on the same batch: the forget term is applied
    once, with the sign and weight the method says; under SURE only the salient modules move
    (a mask applied where the Trainer never looks, or a forget gradient added twice, fails)."""
    method, extra = STEP_CASES[case]
    lr, weight = 0.5, 0.7
    # QUAIL's hinge is 0 with zero gradient at θ = θ₀: a different reference makes it act at step 1.
    ref_model = tiny_llama(tok, seed=1) if "quail" in extra.get("modifiers", {}) else None
    trainer = make_trainer(
        tok, tmp_path, method, optim="sgd", learning_rate=lr, max_steps=1, lr_scheduler_type="constant",
        max_grad_norm=0.0, retain_weight=weight, per_device_train_batch_size=2, ref_model=ref_model, **extra,
    )  # fmt: skip
    manual = copy.deepcopy(trainer.model)  # with SURE's requires_grad flags
    batch = next(iter(trainer.get_train_dataloader()))
    hand_loss(trainer, manual, batch, method, weight).backward()
    assert_one_sgd_step(trainer, manual, lr)


def test_gradient_accumulation_matches_one_big_batch(tok, tmp_path) -> None:
    """Two accumulated batches of 1 = one batch of 2 (equal-length sequences, SGD)."""
    common = dict(
        optim="sgd", learning_rate=0.5, max_steps=1, lr_scheduler_type="constant", max_grad_norm=0.0
    )
    texts = ["abcdefgh", "hgfedcba"]
    results = []
    for batch, accumulation in ((2, 1), (1, 2)):
        trainer = make_trainer(
            tok, tmp_path, "ga", per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
            **common,
        )  # fmt: skip
        trainer.train_dataset = ForgetRetainDataset(chunk_texts(texts, tok, 64), None)
        trainer.train()
        results.append([p.detach().clone() for p in trainer.model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_config_rejects_unknown_losses(tmp_path) -> None:
    with pytest.raises(ValueError, match="forget_loss must be one of"):
        UnlearningConfig(output_dir=str(tmp_path), forget_loss="ascent")
    with pytest.raises(ValueError, match="retain_loss must be one of"):
        UnlearningConfig(output_dir=str(tmp_path), retain_loss="kl")


def test_retain_loss_needs_retain_data(tok, tmp_path) -> None:
    with pytest.raises(ValueError, match="needs retain data"):
        UnlearningTrainer(
            model=tiny_llama(tok),
            args=UnlearningConfig(output_dir=str(tmp_path), retain_loss="gdr", report_to="none"),
            train_dataset=ForgetRetainDataset(chunk_texts(FORGET, tok, 64), None),
            processing_class=tok,
        )


def test_lora_reference_is_the_base_model_without_a_copy(tok, tmp_path, monkeypatch) -> None:
    base = tiny_llama(tok)
    base_weights = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))

    def no_copy(obj):
        raise AssertionError("a LoRA run must not copy the base model")

    monkeypatch.setattr(trainer_module, "copy", types.SimpleNamespace(deepcopy=no_copy))
    trainer = make_trainer(
        tok,
        tmp_path,
        "npo_klr",
        model=model,
        max_steps=3,
        learning_rate=0.05,
        modifiers={"quail": {"weight": 0.1, "margin": 1.0}},
    )
    assert trainer.ref_model is None
    trainer.train()
    batch = UnlearningCollator(tok.pad_token_id)([trainer.train_dataset[0]])
    reference = trainer._reference_logits(trainer.model, batch, "retain")
    check = tiny_llama(tok)  # the base model, rebuilt
    with torch.no_grad():
        expected = check(
            input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]
        ).logits
        current = trainer.model(
            input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]
        ).logits
    torch.testing.assert_close(reference, expected)
    assert not torch.allclose(current, expected)  # the adapter did learn
    for name, p in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base_weights[name.replace(".base_layer", "")]), name


def test_training_config_carries_every_terms_resolved_parameters(tmp_path) -> None:
    recipe = load_recipe(write(tmp_path, with_(method=[{"name": "npo_klr", "beta": 0.5}])))
    config = training_config(recipe, recipe.method[0], tmp_path)
    assert config.term_params == {"npo": {"beta": 0.5, "muse_compat": False}, "klr": {"muse_compat": False}}
    assert config.weighted_terms() == [("npo", 1.0), ("klr", 1.0)]


def test_muse_compat_trains_on_the_raw_logit_forms_and_the_default_stays_correct(tok, tmp_path) -> None:
    params = {"npo": {"muse_compat": True}, "klr": {"muse_compat": True}}
    trainer = make_trainer(tok, tmp_path, "npo_klr", term_params=params, ref_model=tiny_llama(tok, seed=1))
    assert trainer._ref_nll is None  # the raw-logit form reads θ₀'s logits, not the cached NLL
    batch = next(iter(trainer.get_train_dataloader()))
    part = {"input_ids": batch["forget_input_ids"], "attention_mask": batch["forget_attention_mask"]}
    retain = {"input_ids": batch["retain_input_ids"], "attention_mask": batch["retain_attention_mask"]}
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch)
        ref = trainer.ref_model
        expected = npo_muse(trainer.model(**part).logits, ref(**part).logits, 0.1) + klr_muse(
            trainer.model(**retain).logits, ref(**retain).logits
        )
    torch.testing.assert_close(got, expected)
    default = make_trainer(tok, tmp_path, "npo_klr")
    assert default._ref_nll is not None and default.params["npo"].muse_compat is False
