"""modifiers/projection.py: OEU in the trainer: one step against a hand-computed projection, accumulated
gradients, the global scope, bf16, and the refusals of a recipe and of the trainer."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_llama
from helpers import make_trainer, with_, write
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from llm_unlearn import terms as objectives
from llm_unlearn.data.collate import ForgetRetainDataset, chunk_texts
from llm_unlearn.recipe import RecipeError, load_recipe
from llm_unlearn.trainer import UnlearningTrainer
from llm_unlearn.unlearning_config import UnlearningConfig


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
        modifiers={"projection": {"scope": scope, "alpha": alpha}}, optim="sgd", learning_rate=0.5,
        max_steps=1,
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


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            {"fp16": True},
            r"method\.0: OEU's hand-written update bypasses fp16's loss scaler; use train\.bf16",
        ),
        ({"fsdp": "full_shard"}, r"method\.0: OEU projects whole per-layer gradients; .*use DDP"),
        ({"deepspeed": "ds.json"}, r"method\.0: OEU projects whole per-layer gradients; .*use DDP"),
    ],
)
def test_oeu_refusals_are_one_line_recipe_errors(train, message, tmp_path) -> None:
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(write(tmp_path, with_(method=[{"name": "oeu"}], train=train)))
    assert "\n" not in str(err.value)


def test_oeu_in_bf16_takes_the_fp32_step_up_to_bf16_rounding(tok, tmp_path) -> None:
    """OEU writes its update into `.grad` itself; under bf16 autocast (no loss scaler) the step must be
    the fp32 one up to bf16's precision: same direction, same size."""
    deltas = []
    for bf16 in (False, True):
        trainer = make_trainer(
            tok, tmp_path, "oeu", optim="sgd", learning_rate=0.5, max_steps=1, lr_scheduler_type="constant",
            max_grad_norm=0.0, bf16=bf16,
        )  # fmt: skip
        before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
        trainer.train()
        after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        assert torch.isfinite(after).all()
        deltas.append(after - before)
    fp32, bf16 = deltas
    assert torch.nn.functional.cosine_similarity(fp32, bf16, dim=0) > 0.99
    assert bf16.norm().item() == pytest.approx(fp32.norm().item(), rel=0.05)


def test_the_trainer_refuses_what_it_cannot_run_before_training(tok, tmp_path) -> None:
    """The same refusals at the start of `unlearn()`, for a launch (FSDP from accelerate) or a model
    the recipe cannot see."""
    args = UnlearningConfig(
        output_dir=str(tmp_path),
        forget_loss="entropy",
        retain_loss="gdr",
        modifiers={"projection": {"scope": "layer"}},
        use_cpu=True,
    )
    with pytest.raises(ValueError, match="FSDP/DeepSpeed shard them: use DDP"):
        UnlearningTrainer.check(args, tiny_llama(tok), "FSDP")
    UnlearningTrainer.check(args, tiny_llama(tok), "NO")
