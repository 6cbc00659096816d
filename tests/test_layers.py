"""The package's layering holds: import-linter's contracts in pyproject.toml ([tool.importlinter]).

Lower stages (data, terms, methods, metrics, quant, kernels, models) never import the recipe, the
audit, the pipeline, the hub or the CLI, and no module imports from a layer above its own; a broken
contract prints the offending import chain and fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # lint-imports reads pyproject.toml and finds the package from here
    monkeypatch.syspath_prepend(str(ROOT))
    # its logging set-up is a dictConfig, which disables every logger created before it (the run
    # log's, display.py) for the rest of the session: the tests after this one would log nothing
    monkeypatch.setattr("importlinter.cli._configure_logging", lambda verbose: None)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == (
        EXIT_STATUS_SUCCESS
    )
