"""cnn/recipe.py: a CNN recipe's errors name the field; the shipped CNN recipes validate."""

from __future__ import annotations

import pytest
from helpers import ROOT, _demo_data

from llm_unlearn.cnn.recipe import load_cnn_recipe, validate_cnn_recipe
from llm_unlearn.recipe import RecipeError


def test_recipe_errors_name_the_field():
    data = _demo_data()
    data["methods"] = [{"name": "ga", "epochs": 1, "lr": 0.1, "scope": "global"}]
    with pytest.raises(RecipeError, match=r"methods\.0: .*scope is not an option of 'ga'"):
        validate_cnn_recipe(data)
    data["methods"] = [{"name": "retrain", "epochs": 1, "lr": 0.1}]
    with pytest.raises(RecipeError, match=r"methods\.0\.name: 'retrain' always runs"):
        validate_cnn_recipe(data)
    data["methods"] = [{"name": "npo", "epochs": 1, "lr": 0.1}]
    with pytest.raises(RecipeError, match="unknown CNN method 'npo'; known: ft, ga"):
        validate_cnn_recipe(data)
    with pytest.raises(RecipeError, match="data.source: unknown CNN data source 'imagenet'"):
        validate_cnn_recipe({**_demo_data(), "data": {"source": "imagenet"}})
    with pytest.raises(RecipeError, match="model.bits: unknown field; allowed here: arch, width"):
        validate_cnn_recipe({**_demo_data(), "model": {"bits": 4}})


@pytest.mark.parametrize("name", ["qmul_cifar10", "qmul_cifar100", "oeu_cifar100_30", "cnn_demo"])
def test_shipped_recipes_validate(name):
    recipe = load_cnn_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert {m.name for m in recipe.methods} >= {"qmul"}
