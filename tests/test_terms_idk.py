"""IdkNLL (TOFU): the refusal pairing by hand, the loss by hand, and one trainer step by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import assert_one_sgd_step, make_trainer, with_, write

from llm_unlearn.recipe import RecipeError, load_recipe
from llm_unlearn.terms import ce, gdr
from llm_unlearn.terms.idk import idk_pairs, refusal_texts


def test_idk_pairs_split_a_raw_window_into_question_and_answer_by_hand(tok) -> None:
    """A window of 6 real tokens and one pad, prompt_share 0.5: x = its first 3 tokens, y = the last 3;
    y_idk = ' ab' + EOS. Labels: -100 on x and padding, the answer's ids elsewhere."""
    window = [1, *tok("xyzw", add_special_tokens=False)["input_ids"], 2]
    batch = {
        "input_ids": torch.tensor([[*window, 0]]),
        "attention_mask": torch.tensor([[1] * 6 + [0]]),
        "index": torch.tensor([5]),
    }
    pairs = idk_pairs(batch, tok, ("ab",), prompt_share=0.5, seed=0)
    refusal = [*tok(" ab", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert pairs["idk"]["input_ids"].tolist() == [window[:3] + refusal]
    assert pairs["idk"]["labels"].tolist() == [[-100] * 3 + refusal]
    assert pairs["answer"]["input_ids"].tolist() == [window]
    assert pairs["answer"]["labels"].tolist() == [[-100] * 3 + window[3:]]
    assert pairs["answer"]["attention_mask"].tolist() == [[1] * 6]


def test_each_example_keeps_its_seeded_refusal(tok) -> None:
    shipped = refusal_texts(None)
    assert len(shipped) >= 5 and "I don't know." in shipped
    ids = torch.tensor([[1, 40, 41, 42]] * 12)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "index": torch.arange(12)}
    drawn = idk_pairs(batch, tok, shipped, 0.5, seed=0)["idk"]["input_ids"]
    assert torch.equal(drawn, idk_pairs(batch, tok, shipped, 0.5, seed=0)["idk"]["input_ids"])
    assert len({tuple(row.tolist()) for row in drawn}) > 1  # examples draw different refusals


def test_idknll_loss_is_the_refusals_mean_nll_by_hand() -> None:
    """Two scored positions (p = 1/2 and 3/4 on the refusal's tokens): ce = (ln 2 + ln 4/3)/2; the
    question's position is unscored whatever it predicts."""
    logits = torch.tensor([[[9.0, -9.0], [0.0, 0.0], [0.0, math.log(3.0)], [1.0, 1.0]]], requires_grad=True)
    labels = torch.tensor([[-100, -100, 0, 1]])
    loss = ce(logits, labels)
    assert loss.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    loss.backward()
    expected = torch.tensor([[[0.0, 0.0], [-0.25, 0.25], [0.125, -0.125], [0.0, 0.0]]])
    torch.testing.assert_close(logits.grad, expected)


def test_one_idknll_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇(ce(θ, x + y_idk) + λ·GDR), with the refusals of a file the recipe names."""
    lr, weight = 0.5, 0.7
    refusals = tmp_path / "refusals.txt"
    refusals.write_text("No idea.\n\nCannot say.\n")
    params = {"idknll": {"refusals": str(refusals), "prompt_share": 0.4}}
    trainer = make_trainer(
        tok, tmp_path, "idknll", optim="sgd", learning_rate=lr, max_steps=1, lr_scheduler_type="constant",
        max_grad_norm=0.0, retain_weight=weight, term_params=params,
    )  # fmt: skip
    assert trainer.ref_model is None and trainer._ref_nll is None
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    forget = {k: batch[f"forget_{k}"] for k in ("input_ids", "attention_mask")} | {
        "index": batch["forget_index"]
    }
    idk = idk_pairs(forget, tok, ("No idea.", "Cannot say."), 0.4, 0)["idk"]
    f = manual(input_ids=idk["input_ids"], attention_mask=idk["attention_mask"]).logits
    r = manual(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits
    (ce(f, idk["labels"]) + weight * gdr(r, batch["retain_labels"])).backward()
    assert_one_sgd_step(trainer, manual, lr)


def test_a_missing_refusal_file_is_a_one_line_recipe_error(tmp_path) -> None:
    with pytest.raises(RecipeError, match=r"method\.0\.refusals: .*'nope\.txt' is not a file"):
        load_recipe(write(tmp_path, with_(method=[{"name": "idknll", "refusals": "nope.txt"}])))
