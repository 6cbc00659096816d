"""The term registry: what the recipe and the trainer derive from it, and the refusals it implies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_llama
from helpers import make_trainer, with_, write

from llm_unlearn.recipe import RESERVED_TRAIN_FIELDS, MethodSection, RecipeError, load_recipe
from llm_unlearn.terms import TERMS, klr_muse, npo_muse
from llm_unlearn.trainer import UnlearningTrainer, training_config
from llm_unlearn.unlearning_config import UnlearningConfig


def test_method_fields_and_reserved_train_fields_derive_from_the_registry(tmp_path) -> None:
    for name in TERMS.names():
        for key in TERMS.get(name).params.model_fields:
            assert key in MethodSection.model_fields or TERMS.get(name).regulariser, (name, key)
    assert {
        "output_dir",
        "forget_loss",
        "retain_loss",
        "term_params",
        "modifiers",
    } <= RESERVED_TRAIN_FIELDS
    assert "learning_rate" not in RESERVED_TRAIN_FIELDS
    with pytest.raises(
        RecipeError, match=r"method\.0: muse_compat is a parameter of the terms klr, npo; 'ga'"
    ):
        load_recipe(write(tmp_path, with_(method=[{"name": "ga", "muse_compat": True}])))
    with pytest.raises(RecipeError, match=r"train: 'term_params' is set by the recipe's method"):
        load_recipe(write(tmp_path, with_(train={"term_params": {}})))


def test_training_config_carries_every_terms_resolved_parameters(tmp_path) -> None:
    recipe = load_recipe(write(tmp_path, with_(method=[{"name": "npo_klr", "beta": 0.5}])))
    config = training_config(recipe, recipe.method[0], tmp_path)
    assert config.term_params == {"npo": {"beta": 0.5, "muse_compat": False}, "klr": {"muse_compat": False}}
    assert config.weighted_terms() == [("npo", 1.0), ("klr", 1.0)]


def test_config_rejects_a_bad_term_parameter(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"term_params\.npo\.beta: Input should be greater than 0"):
        UnlearningConfig(output_dir=str(tmp_path), forget_loss="npo", term_params={"npo": {"beta": -1}})
    with pytest.raises(ValueError, match=r"names terms this run does not use: \['npo'\]"):
        UnlearningConfig(output_dir=str(tmp_path), forget_loss="ga", term_params={"npo": {}})


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


def test_shipped_recipes_still_resolve_to_the_baselines_terms() -> None:
    root = Path(__file__).parents[1] / "recipes"
    recipe = load_recipe(root / "npo_gdr_news.yaml", ["train.bf16=false"])  # no GPU here
    config = training_config(recipe, recipe.method[0], Path("/tmp/unused"))
    assert config.weighted_terms() == [("npo", 1.0), ("gdr", 1.0)]
    assert config.resolved_params()["npo"].beta == 0.1
