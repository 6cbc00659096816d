"""RMU (Li et al. 2024): value and gradient by hand, the control vector, and one step that moves
exactly the MLPs of layers ℓ−2…ℓ."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_llama
from helpers import make_trainer
from peft import LoraConfig, get_peft_model

from llm_unlearn.errors import UserError
from llm_unlearn.terms.rmu import control_vector, rmu_forget, rmu_retain
from llm_unlearn.trainer import UnlearningTrainer
from llm_unlearn.unlearning_config import UnlearningConfig

# Two real tokens and one padding position, d = 2; control c·u = (2, 0).
HIDDEN = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
MASK = torch.tensor([[1, 1, 0]])
CONTROL = torch.tensor([2.0, 0.0])


def test_rmu_forget_value_and_gradient_by_hand() -> None:
    """‖(1,0) − (2,0)‖² = 1 and ‖(0,1) − (2,0)‖² = 5: mean 3; dL/dh_t = 2(h_t − c·u)/2 on real tokens."""
    hidden = HIDDEN.clone().requires_grad_(True)
    loss = rmu_forget(hidden, MASK, CONTROL)
    assert loss.item() == pytest.approx(3.0)
    loss.backward()
    torch.testing.assert_close(hidden.grad, torch.tensor([[[-1.0, 0.0], [-2.0, 1.0], [0.0, 0.0]]]))


def test_rmu_retain_value_and_gradient_by_hand() -> None:
    """h₀ = 0: ‖(1,0)‖² = 1, ‖(0,1)‖² = 1, mean 1; gradient h_t; zero at h = h₀."""
    hidden = HIDDEN.clone().requires_grad_(True)
    loss = rmu_retain(hidden, torch.zeros_like(HIDDEN), MASK)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    torch.testing.assert_close(hidden.grad, torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]))
    assert rmu_retain(HIDDEN, HIDDEN, MASK).item() == 0.0


def test_control_vector_is_seeded_with_length_c() -> None:
    v = control_vector(16, 6.5, seed=3)
    assert v.norm().item() == pytest.approx(6.5) and (v >= 0).all()
    assert torch.equal(v, control_vector(16, 6.5, seed=3))
    assert not torch.equal(v, control_vector(16, 6.5, seed=4))


def test_one_rmu_step_moves_exactly_the_mlps_of_layers_l_minus_2_to_l(tok, tmp_path) -> None:
    """4 layers, ℓ = 3: the MLP weights of layers 1, 2, 3 take the hand-written SGD step of
    L_f + α·L_r; layer 0's MLP, every attention block, the embeddings, norms and head stay put."""
    lr, alpha, layer, c = 0.5, 0.7, 3, 4.0
    trainer = make_trainer(
        tok, tmp_path, "rmu", model=tiny_llama(tok, num_hidden_layers=4), optim="sgd", learning_rate=lr,
        max_steps=1, lr_scheduler_type="constant", max_grad_norm=0.0, retain_weight=alpha,
        term_params={"rmu": {"layer": layer, "steering_coeff": c}, "rmu_retain": {"layer": layer}},
    )  # fmt: skip
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained == {
        f"model.layers.{i}.mlp.{m}_proj.weight" for i in (1, 2, 3) for m in ("gate", "up", "down")
    }
    manual = copy.deepcopy(trainer.model)
    before = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))

    def hidden(model, part):
        x = {"input_ids": batch[f"{part}_input_ids"], "attention_mask": batch[f"{part}_attention_mask"]}
        return model(**x, output_hidden_states=True).hidden_states[layer + 1]

    with torch.no_grad():
        ref = hidden(before, "retain")
    control = control_vector(32, c, 0)
    loss = rmu_forget(hidden(manual, "forget"), batch["forget_attention_mask"], control)
    loss = loss + alpha * rmu_retain(hidden(manual, "retain"), ref, batch["retain_attention_mask"])
    loss.backward()
    with torch.no_grad():
        for p in manual.parameters():
            if p.requires_grad:
                p -= lr * p.grad
    trainer.train()
    for (name, a), b, c0 in zip(
        trainer.model.named_parameters(), manual.parameters(), before.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
        assert torch.equal(a, c0) != (name in trained), name


def test_rmu_under_lora_reads_theta0_with_the_adapter_disabled(tok, tmp_path) -> None:
    model = get_peft_model(
        tiny_llama(tok), LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "q_proj"])
    )
    params = {"rmu": {"layer": 1}, "rmu_retain": {"layer": 1}}
    trainer = make_trainer(tok, tmp_path, "rmu", model=model, term_params=params)
    assert trainer.ref_model is None  # no second copy of the model
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all("mlp.gate_proj.lora_" in n for n in trained)


def test_a_layer_the_model_lacks_is_a_user_error(tok, tmp_path) -> None:
    args = UnlearningConfig(
        output_dir=str(tmp_path), forget_loss="rmu", retain_loss="rmu_retain", use_cpu=True,
        term_params={"rmu": {"layer": 7}, "rmu_retain": {"layer": 7}},
    )  # fmt: skip
    with pytest.raises(
        UserError,
        match=r"term rmu: layer 7 is not one of the model's layers 0\.\.1; set the method's `layer`",
    ):
        UnlearningTrainer.check(args, tiny_llama(tok))
