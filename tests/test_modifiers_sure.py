"""SURE, QUAIL, OEU and LoRA in the trainer: what trains, what stays, and one step by hand."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from conftest import tiny_llama
from helpers import make_trainer
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

import llm_unlearn.trainer as trainer_module
from llm_unlearn import terms as objectives
from llm_unlearn.data.collate import ForgetRetainDataset, UnlearningCollator, chunk_texts
from llm_unlearn.saliency import salient_modules, weight_matrices
from llm_unlearn.trainer import UnlearningTrainer
from llm_unlearn.unlearning_config import UnlearningConfig


def test_sure_saliency_is_the_accumulated_forget_gradient_norm(tok, tmp_path) -> None:
    trainer = make_trainer(tok, tmp_path, "ga_gdr", saliency_percentile=80.0, per_device_train_batch_size=1)
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
    plain = make_trainer(tok, tmp_path, "ga_gdr", saliency_percentile=80.0)
    checkpointed = make_trainer(
        tok, tmp_path, "ga_gdr", saliency_percentile=80.0, activation_checkpointing=True
    )
    assert checkpointed.model.is_activation_checkpointing
    assert checkpointed.saliency["saliency"] == pytest.approx(plain.saliency["saliency"], rel=1e-5)


def test_sure_freezes_everything_but_the_salient_modules(tok, tmp_path) -> None:
    trainer = make_trainer(tok, tmp_path, "npo_gdr", saliency_percentile=90.0, max_steps=3)
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


def test_quail_hinge_without_a_margin_is_plain_ga_gdr(tok, tmp_path) -> None:
    results = []
    for extra in ({}, {"hinge_weight": 1.0, "hinge_margin": 0.0}):
        trainer = make_trainer(tok, tmp_path, "ga_gdr", optim="sgd", max_steps=2, **extra)
        trainer.train()
        results.append([p.detach().clone() for p in trainer.model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


class TwoLayerLM(nn.Module):
    """Embedding -> tanh -> Linear: the smallest causal LM with two weight tensors."""

    def __init__(self, vocab: int, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids, attention_mask=None, **kwargs) -> CausalLMOutput:
        return CausalLMOutput(logits=self.head(torch.tanh(self.embed(input_ids))))


def oeu_trainer(tok, tmp_path, alpha: float, scope: str = "layer", batch: int = 2, accumulation: int = 1):
    texts_f, texts_r = ["abcdefgh", "hgfedcba"], ["qrstuvwx", "xwvutsrq"]  # equal lengths
    args = UnlearningConfig(
        output_dir=str(tmp_path / "oeu"), forget_loss="entropy", retain_loss="gdr", retain_weight=0.7,
        projection=scope, projection_alpha=alpha, optim="sgd", learning_rate=0.5, max_steps=1,
        lr_scheduler_type="constant", max_grad_norm=0.0, per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, report_to="none", save_strategy="no", use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    dataset = ForgetRetainDataset(chunk_texts(texts_f, tok, 64), chunk_texts(texts_r, tok, 64), seed=0)
    return UnlearningTrainer(
        model=TwoLayerLM(len(tok)), args=args, train_dataset=dataset, processing_class=tok
    )


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_oeu_step_equals_a_hand_computed_projection(alpha, tok, tmp_path) -> None:
    trainer = oeu_trainer(tok, tmp_path, alpha)
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    params = list(manual.parameters())
    f_logits = manual(batch["forget_input_ids"]).logits
    g_f = torch.autograd.grad(objectives.entropy(f_logits, batch["forget_labels"]), params)
    r_logits = manual(batch["retain_input_ids"]).logits
    g_r = torch.autograd.grad(0.7 * objectives.gdr(r_logits, batch["retain_labels"]), params)
    expected = []
    for p, f, r in zip(params, g_f, g_r, strict=True):
        u_f, u_r = f / f.norm(), r / r.norm()
        proj = u_f - alpha * (u_f * u_r).sum() * u_r
        proj = proj * f.norm() / proj.norm()
        if alpha == 1.0:
            assert abs((proj * r).sum()) < 1e-5 * f.norm() * r.norm()  # orthogonal per layer
        else:
            torch.testing.assert_close(proj, f)  # α = 0 leaves g_f as it is
        expected.append(p.detach() - 0.5 * (proj + r))
    trainer.train()
    for a, b in zip(trainer.model.parameters(), expected, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-6)


def test_oeu_projects_the_accumulated_gradients(tok, tmp_path) -> None:
    """Two accumulated micro-batches of 1 = one batch of 2: the projection acts on the gradient
    that is applied, not on each micro-batch's."""
    one = oeu_trainer(tok, tmp_path, 1.0, batch=2)
    two = oeu_trainer(tok, tmp_path, 1.0, batch=1, accumulation=2)
    one.train()
    two.train()
    for a, b in zip(one.model.parameters(), two.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_oeu_global_scope_differs_from_layerwise(tok, tmp_path) -> None:
    layer, whole = oeu_trainer(tok, tmp_path, 1.0), oeu_trainer(tok, tmp_path, 1.0, scope="global")
    layer.train()
    whole.train()
    assert not torch.equal(layer.model.head.weight, whole.model.head.weight)


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
        hinge_weight=0.1,
        hinge_margin=1.0,
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
