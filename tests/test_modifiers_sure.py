"""modifiers/sure.py: SURE in the trainer: the saliency (saliency.py) of the forget loss at θ₀, and
what trains and what stays."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from helpers import make_trainer

from llm_unlearn import terms as objectives
from llm_unlearn.data.collate import UnlearningCollator
from llm_unlearn.saliency import salient_modules, weight_matrices


def test_sure_saliency_is_the_accumulated_forget_gradient_norm(tok, tmp_path) -> None:
    trainer = make_trainer(
        tok, tmp_path, "ga_gdr", modifiers={"sure": {"percentile": 80.0}}, per_device_train_batch_size=1
    )
    manual = tiny_llama(tok)  # θ₀ again (same seed)
    collate = UnlearningCollator(tok.pad_token_id)
    for i in range(len(trainer.train_dataset.forget)):  # one sequence at a time: Σ over batches
        batch = collate([trainer.train_dataset[i]])
        logits = manual(
            input_ids=batch["forget_input_ids"], attention_mask=batch["forget_attention_mask"]
        ).logits
        objectives.ga(logits, batch["forget_labels"]).backward()
    expected = {name: p.grad.norm().item() for name, p in weight_matrices(manual).items()}
    assert trainer.saliency["saliency"] == pytest.approx(expected, rel=1e-4)
    assert trainer.saliency["modules"] == sorted(salient_modules(expected, 80.0))


def test_sure_saliency_is_the_same_with_activation_checkpointing(tok, tmp_path) -> None:
    plain = make_trainer(tok, tmp_path, "ga_gdr", modifiers={"sure": {"percentile": 80.0}})
    checkpointed = make_trainer(
        tok, tmp_path, "ga_gdr", modifiers={"sure": {"percentile": 80.0}}, activation_checkpointing=True
    )
    assert checkpointed.model.is_activation_checkpointing
    assert checkpointed.saliency["saliency"] == pytest.approx(plain.saliency["saliency"], rel=1e-5)


def test_sure_freezes_everything_but_the_salient_modules(tok, tmp_path) -> None:
    trainer = make_trainer(tok, tmp_path, "npo_gdr", modifiers={"sure": {"percentile": 90.0}}, max_steps=3)
    chosen = set(trainer.saliency["modules"])
    assert 0 < len(chosen) < len(weight_matrices(trainer.model)) / 4
    assert trainer.saliency["count"] == len(chosen) and 0 < trainer.saliency["param_share"] < 0.5
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        if name in chosen:
            assert not torch.equal(param, before[name]), f"salient {name} did not change"
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"
    # no optimizer state for frozen parameters (the mask is applied before the optimizer exists)
    trained = {id(p) for n, p in trainer.model.named_parameters() if n in chosen}
    assert {id(p) for group in trainer.optimizer.param_groups for p in group["params"]} == trained
