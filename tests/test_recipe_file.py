from pathlib import Path

import pytest

from llm_unlearn.recipe_file import RecipeError, apply_overrides, read_unlearning_recipe


def test_override_through_a_scalar_is_an_error() -> None:
    with pytest.raises(RecipeError, match="name is not a section"):
        apply_overrides({"name": "x"}, ["name.first=1"])


def test_overrides_reach_into_lists_and_make_sections(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("method: [{name: ga}]\n")
    data = read_unlearning_recipe(path, ["method.0.name=npo", "train.learning_rate=0.0002"])
    assert data == {"method": [{"name": "npo"}], "train": {"learning_rate": 2e-4}, "name": "r"}
