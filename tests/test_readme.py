"""The README's test command is the one CI runs."""

from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme_blocks = ROOT.joinpath("README.md").read_text().split("```bash\n")
    test_command = readme_blocks[2].split("\n")[0]
    assert test_command.endswith("&& pytest")
    assert test_command in ROOT.joinpath(".ci", "run").read_text().splitlines()
    demo_command = readme_blocks[1].split("\n")[0]
    assert demo_command.endswith("llm-unlearn demo")
