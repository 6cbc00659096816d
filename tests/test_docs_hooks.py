"""docs/hooks.py: the reference pages follow the code, and the site builds and renders.

The build and the screenshots need mkdocs-material (`pip install -e ".[docs]"`, CI's docs job) and
Debian's `chromium`; without them those tests skip, as the main test run has neither.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, load_script
from PIL import Image

from llm_unlearn.metrics import METRICS
from llm_unlearn.quant.registry import QUANTIZER_FAMILIES
from llm_unlearn.recipe import ModelSection, Recipe, VerdictSection

hooks = load_script(ROOT / "docs" / "hooks.py")


def test_a_changed_field_description_changes_the_recipe_reference(monkeypatch):
    before = hooks.recipe_reference(Recipe)
    old = ModelSection.model_fields["target"].description
    assert f"| `model.target` | str | required | {old} |" in before
    monkeypatch.setattr(ModelSection.model_fields["target"], "description", "A new description.")
    after = hooks.recipe_reference(Recipe)
    assert "| `model.target` | str | required | A new description. |" in after
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("| `model.target` |")


def test_recipe_reference_has_every_field_with_its_default():
    page = hooks.recipe_reference(Recipe)
    sections = re.findall(r"^## `(\w+)`$", page, re.MULTILINE)
    assert sections == list(Recipe.model_fields)
    for name, info in VerdictSection.model_fields.items():  # nested: every field of a section
        assert f"| `verdict.{name}` |" in page and (info.description or "") in page
    assert f"| `verdict.holds_below` | float | `{VerdictSection().holds_below!r}` |" in page
    # the methods' terms and modifiers' sections are fields too, and their own fields below them
    assert "| `method.sure` |" in page and "| `method.sure.percentile` |" in page


def test_cli_reference_is_every_command_help():
    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers()
    sub.add_parser("first", help="the first").add_argument("--flag", help="a flag's help")
    sub.add_parser("second", help="the second")
    page = hooks.cli_reference(parser)
    assert re.findall(r"^## `llm-unlearn (\w+)`$", page, re.MULTILINE) == ["first", "second"]
    assert "--flag FLAG  a flag's help" in page
    real = hooks.cli_reference()
    for command in ("run", "audit", "verify", "report", "push"):
        assert f"## `llm-unlearn {command}`" in real
    assert "--fail-on {shipped,attack,any}" in real


def test_metric_and_column_references_list_every_registered_one():
    metrics = hooks.metric_reference()
    for name in METRICS:
        row = next(line for line in metrics.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"| {METRICS.get(name).role} |" in row
    columns = hooks.column_reference()
    for family in QUANTIZER_FAMILIES:
        row = next(line for line in columns.splitlines() if line.startswith(f"| `{family}` |"))
        assert ("| attack |" in row) == (getattr(QUANTIZER_FAMILIES.get(family), "route", "") == "attack")
    assert "| `relearn` | attack |" in columns


def test_markers_become_generated_blocks():
    page = hooks.on_page_markdown(
        "# Metrics\n\n<!-- reference: metrics -->\n\n<!-- table: demo -->\n<!-- /table -->\n"
    )
    assert hooks.metric_reference() in page and "| grid-aligned target |" in page


# --- the site: built strictly, every local asset there, rendered in headless Chromium ----------


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value and not re.match(r"^(https?:|mailto:|#|data:)", value):
                self.urls.append(value.split("#")[0].split("?")[0])


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("material", reason="mkdocs-material: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    build = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(out),
    ]
    done = subprocess.run(build, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


PAGES = ["index.html", "reference/recipe/index.html"]


@pytest.mark.parametrize("page", PAGES)
def test_site_pages_have_every_local_asset(site, page):
    html = site / page
    parser = _Assets()
    parser.feed(html.read_text())
    assert parser.urls
    missing = [url for url in parser.urls if not (html.parent / url).resolve().exists()]
    assert not [url for url in missing if not url.endswith("/")], missing


@pytest.mark.parametrize("page", PAGES)
def test_site_pages_render_in_headless_chromium(site, page, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH: apt-get install chromium")
    shot = tmp_path / "page.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr"]
    command = [browser, *flags, "--window-size=1280,1600", f"--screenshot={shot}", (site / page).as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ERR_FILE_NOT_FOUND" not in done.stderr  # a stylesheet, script or image the page lacks
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    # material's header bar and the page's text: a blank or unstyled page is one flat colour
    assert pixels.std() > 10 and (pixels < 100).mean() > 0.01
