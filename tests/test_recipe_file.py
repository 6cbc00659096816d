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


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("method: {name: npoo}", "r.yaml: method.0.name: unknown method 'npoo'; known: "),
        ("method: [{name: ga}, {name: npoo}]", "r.yaml: method.1.name: unknown method 'npoo'"),
        ("quantize: [fp, rtn-w5]", "r.yaml: quantize: malformed name 'rtn-w5'; expected rtn-w{2,3,4,8}"),
        ("quantize: [rtm-w4]", "r.yaml: quantize: unknown quantizer 'rtm-w4'; known: awq-"),
        ("evaluate: [verbmem, verbmemm]", "r.yaml: evaluate: unknown metric 'verbmemm'"),
    ],
)
def test_misspelled_names_are_refused_when_the_file_is_read(tmp_path: Path, given: str, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(given + "\n")
    with pytest.raises(RecipeError) as refused:
        read_unlearning_recipe(path)
    assert str(refused.value).startswith(str(tmp_path / message))


def test_names_of_another_shape_are_left_to_the_validation(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("method: npoo\nquantize: rtn-w5\nevaluate: [1]\n")
    assert read_unlearning_recipe(path)["method"] == "npoo"  # the recipe's validation says what is wrong
