import subprocess
import sys
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


# Each command line is refused (or answered) by the CLI without importing torch or transformers:
# the path, YAML and --set checks come before the registries that validate a recipe.
BAD_SET = "name: a\n"
QUICK = {
    "missing recipe": (["check", "{tmp}/missing.yaml"], 2, "recipe file not found"),
    "help": (["--help"], 0, "check"),
    "bad --set": (["check", "{tmp}/r.yaml", "--set", "x"], 2, "expected KEY.PATH=VALUE"),
    "run, missing recipe": (["run", "{tmp}/missing.yaml"], 2, "recipe file not found"),
    "audit, a flag missing": (["audit", "--target", "t", "--out", "{tmp}/o"], 2, "--model is required"),
}


@pytest.mark.parametrize("argv, code, text", QUICK.values(), ids=QUICK.keys())
def test_refusals_do_not_import_torch(tmp_path: Path, argv: list[str], code: int, text: str) -> None:
    (tmp_path / "r.yaml").write_text(BAD_SET)
    argv = [a.format(tmp=tmp_path) for a in argv]
    script = (
        "import sys\nfrom llm_unlearn.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exit:\n    code = exit.code\n"
        "heavy = sorted({'torch', 'transformers'} & set(sys.modules))\n"
        "assert not heavy, heavy\nsys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60)
    assert "AssertionError" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    assert text in done.stdout + done.stderr
