"""The README: its test command is the one CI runs, and its Python snippets run."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT.joinpath("README.md").read_text()
#: the README's ```python blocks; one that calls `run(` trains the demo's models (slow)
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def test_ci_runs_the_readme_test_command() -> None:
    readme_blocks = README.split("```bash\n")
    test_command = readme_blocks[2].split("\n")[0]
    assert test_command.endswith("&& pytest")
    assert test_command in ROOT.joinpath(".ci", "run").read_text().splitlines()
    demo_command = readme_blocks[1].split("\n")[0]
    assert demo_command.endswith("llm-unlearn demo --quick")


def test_readme_is_short_and_links_pages_that_exist() -> None:
    assert len(README.splitlines()) <= 150
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert links and all(ROOT.joinpath(link).is_file() for link in links)


@pytest.mark.parametrize(
    "snippet",
    [pytest.param(s, marks=pytest.mark.slow) if "run(" in s else s for s in SNIPPETS],
    ids=[f"snippet{i}" for i in range(len(SNIPPETS))],
)
def test_readme_python_snippet_runs(snippet: str, tmp_path, monkeypatch, capsys) -> None:
    # a fresh folder for its outputs (runs/...), holding the repository's recipes it names
    os.symlink(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip()
