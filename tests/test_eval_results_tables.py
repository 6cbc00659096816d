"""eval/results_tables.py: the README's and the docs' results tables are the committed results."""

from __future__ import annotations

import json
import re

from helpers import ROOT, load_script

tables = load_script(ROOT / "eval" / "results_tables.py")


def test_readme_tables_are_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    assert "<!-- table: demo -->" in readme
    assert tables.fill(readme) == readme, "stale README table: run `python eval/results_tables.py`"


def test_every_docs_marker_names_a_table():
    names = {
        m
        for page in (ROOT / "docs").rglob("*.md")
        for m in re.findall(r"<!-- table: ([\w-]+) -->", page.read_text())
    }
    assert names == set(tables.TABLES)


def _verdict_recoveries() -> dict[tuple[str, str], str]:
    """The demo report's verdict lines, an independent source of the same recoveries:
    `| holds | oeu | grid-aligned | rtn-w4-g32 | knowmem_forget | 13% [6%, 22%] | ...`."""
    out = {}
    for line in (ROOT / "eval" / "results" / "demo_report.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[2] == "grid-aligned" and cells[3] == "rtn-w4-g32":
            point, low, high = re.findall(r"-?\d+", cells[5])
            out[(cells[1], cells[4])] = f"{point} % [{low}, {high}]"
    return out


def test_demo_table_matches_the_reports_verdict_lines():
    expected = _verdict_recoveries()
    rows = [line.strip("|").split("|") for line in tables.demo_table().splitlines()[2:]]
    assert len(rows) == 5
    for model, knowmem, verbmem, retain in ([c.strip() for c in row] for row in rows):
        assert knowmem == expected[(model, "knowmem_forget")]
        assert verbmem == expected[(model, "verbmem")]
        assert 0 <= float(retain) <= 100


def test_demo_table_follows_its_report(tmp_path):
    report = (ROOT / "eval" / "results" / "demo_report.md").read_text()
    changed = tmp_path / "report.md"
    changed.write_text(
        report.replace("67.2 [63.5, 71.0] (94% [85%, 103%])", "67.2 [63.5, 71.0] (93% [85%, 103%])")
    )
    assert "| ga_gdr | 77 % [59, 93] | 93 % [85, 103] |" in tables.demo_table(changed)


def test_kernels_table_is_kernels_minus_simulated():
    data = json.loads((ROOT / "eval" / "results" / "kernels_vs_simulated.json").read_text())
    table = tables.kernels_table()
    for cell in data["cells"]:
        if (
            cell["model"] == "smollm2-135m"
            and cell["quantizer"] == "bnb-int8"
            and cell["metric"] == "privleak"
        ):
            assert f"+{cell['kernels'] - cell['simulated']:.2f} |" in table
    assert len(table.splitlines()) == 2 + len({(c["model"], c["quantizer"]) for c in data["cells"]})


def test_scale_and_smollm2_tables_read_their_files():
    data = json.loads((ROOT / "eval" / "results" / "scale_benchmark.json").read_text())
    first = data["audit_quantized_cache"]["runs"][0]
    assert f"| {first['hidden']} | {first['checkpoint_bytes'] / 2**20:,.0f} MB |" in tables.scale_table()
    smollm2 = tables.smollm2_table()
    assert (
        smollm2.splitlines()[0].startswith("| model | fp | rtn-w4-g32-min |") and "| oeu | 927.3 |" in smollm2
    )


def test_wmdp_table_is_the_demos_cells_and_verdict(tmp_path):
    cells = json.loads((ROOT / "eval" / "results" / "demo_wmdp_cells.json").read_text())
    verdict = json.loads((ROOT / "eval" / "results" / "demo_wmdp_verdict.json").read_text())
    rows = {
        r[0]: r
        for r in (
            [c.strip() for c in line.strip("|").split("|")] for line in tables.wmdp_table().splitlines()[2:]
        )
    }
    for cell in cells:
        if cell["quantizer"] == "fp":
            name = cell["model"] if cell["target"] == "-" else f"{cell['model']}@{cell['target']}"
            column = 1 if cell["metric"] == "wmdp_bio_continuation" else 2
            assert rows[name][column].startswith(f"{cell['agg_value']:.2f} [")
    for model in verdict["models"]:
        assert rows[f"{model['model']}@{model['target']}"][3] == f"**{model['verdict']}**"
    changed = tmp_path / "cells.json"
    for cell in cells:
        if (cell["model"], cell["quantizer"], cell["metric"]) == ("rmu", "fp", "mmlu_continuation"):
            cell["agg_value"] = 0.5
    changed.write_text(json.dumps(cells))
    assert "| 0.50 [" in tables.wmdp_table(results=changed)
