"""Recipes: every shipped recipe validates, and every user mistake is one line, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llm_unlearn.cli import main
from llm_unlearn.recipe import RecipeError, apply_overrides, load_recipe

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
GOOD = {
    "name": "t",
    "model": {"target": "demo", "retrain": "demo", "grid_align": "rtn-w4-g32"},
    "method": [{"name": "ga_gdr"}],
    "output": {"dir": "runs/t"},
}


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is ...:
            del node[leaf]
        else:
            node[int(leaf) if leaf.isdigit() else leaf] = value
    return data


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_validate(path: Path) -> None:
    assert load_recipe(path).quantize[0] == "fp"
    # TrainingArguments accepts the train section (bf16 needs a GPU: switched off on this CPU)
    recipe = load_recipe(path, ["train.bf16=false"])
    for method in recipe.method:
        recipe.training_config(method, Path("/tmp/unused"))


def test_paper_hyperparameters() -> None:
    for path in RECIPES:
        if path.stem == "demo":
            continue
        recipe = load_recipe(path)
        assert recipe.train["learning_rate"] == 1e-5
        assert recipe.train["num_train_epochs"] == (10 if path.stem.endswith("news") else 1)
        assert recipe.method[0].beta == 0.1 and recipe.method[0].retain_weight == 1.0
    assert len(RECIPES) == 13  # six methods x News/Books + demo


BAD = {
    "unknown top-level key": (
        with_(optimizer="adam"),
        r"optimizer: unknown field; allowed here: name, model",
    ),
    "unknown model key": (
        with_(model__checkpoint="x"),
        r"model\.checkpoint: unknown field; allowed here: target",
    ),
    "wrong type": (with_(data={"max_length": "long"}), r"data\.max_length: .*integer.*'long'"),
    "out of range": (with_(data={"max_length": 2}), r"data\.max_length: .*greater than or equal to 8"),
    "unknown method": (
        with_(method=[{"name": "gaa"}]),
        r"method\.0\.name: unknown method 'gaa'; known: ga, ga_gdr",
    ),
    "unknown quantizer": (
        with_(quantize=["gptx-w4"]),
        r"quantize: unknown quantizer 'gptx-w4'; known: .*rtn-w",
    ),
    "malformed quantizer": (with_(quantize=["rtn-w5"]), r"quantize: .*rtn-w5.*rtn-w\{2,3,4,8\}"),
    "unknown metric": (with_(evaluate=["verbmen"]), r"evaluate: unknown metric 'verbmen'; known: knowmem"),
    "unknown train field": (
        with_(train={"learning_rte": 1}),
        r"train: 'learning_rte' .*did you mean 'learning_rate'",
    ),
    "wrong train type": (
        with_(train={"learning_rate": "fast"}),
        r"train: learning_rate: .*valid number.*'fast'",
    ),
    "reserved train field": (with_(train={"output_dir": "x"}), r"train: 'output_dir' is set by the recipe's"),
    "missing section": (with_(model=...), r"model: required field is missing"),
    "negative beta": (with_(method=[{"name": "npo", "beta": -1}]), r"method\.0\.beta: .*greater than 0"),
    "grid without grid_align": (
        with_(model={"target": "demo"}, method=[{"name": "ga", "targets": ["grid"]}]),
        r"method\.0\.targets asks for 'grid' but model\.grid_align is not set",
    ),
    "unknown target kind": (
        with_(method=[{"name": "ga", "targets": ["ideal"]}]),
        r"method\.0\.targets\.0: .*'natural'",
    ),
    "stop on unknown metric": (
        with_(method=[{"name": "ga", "stop": {"metric": "forget_acc", "below": 1}}]),
        r"method\.0\.stop\.metric: unknown metric 'forget_acc'",
    ),
    "not a mapping": ("- just\n- a list\n", r"a recipe is a YAML mapping"),
    "invalid yaml": ("model: {target: demo\n", r"not valid YAML \(line \d+\)"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_recipe_is_one_line_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, pattern = BAD[case]
    assert main(["check", str(write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("llm-unlearn: error: ")
    assert __import__("re").search(pattern, err), err


def test_missing_recipe_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: recipe file not found" in capsys.readouterr().err


def test_set_overrides_go_through_validation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["train.learning_rate=2e-4", "method.0.beta=0.5", "data.source=/data/muse"])
    assert recipe.train["learning_rate"] == 2e-4 and recipe.method[0].beta == 0.5
    assert recipe.data.source == "/data/muse"
    assert main(["check", str(path), "--set", "train.learning_rate=fast"]) == 2
    assert "train: learning_rate" in capsys.readouterr().err
    assert main(["check", str(path), "--set", "learning_rate"]) == 2
    assert "expected KEY.PATH=VALUE" in capsys.readouterr().err


def test_training_arguments_errors_are_recipe_errors(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, with_(train={"logging_steps": 0, "logging_strategy": "steps"})))
    with pytest.raises(RecipeError, match=r"train: .*logging_steps"):
        recipe.training_config(recipe.method[0], tmp_path)


def test_override_through_a_scalar_is_an_error() -> None:
    with pytest.raises(RecipeError, match="name is not a section"):
        apply_overrides({"name": "x"}, ["name.first=1"])


def test_check_prints_the_resolved_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(write(tmp_path, GOOD)), "--set", "quantize=[rtn-w4-g32]"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["quantize"] == ["fp", "rtn-w4-g32"]  # fp is always audited: recovery is relative to it
    assert resolved["data"]["retain_split"] == "retain1"
