"""The verdict of a run folder: verdict.json, the report opening with it, intervals in every cell."""

from __future__ import annotations

import json

import pytest
import yaml

from llm_unlearn.audit.report import AuditCells, failing_cells, render_markdown, write_report
from llm_unlearn.errors import UserError
from llm_unlearn.runfolder import RunFolder

TARGET = [50.0, 60.0, 70.0, 80.0, 90.0]
UNLEARNED = [0.0, 10.0, 20.0, 30.0, 40.0]  # t_i − u_i = 50 on every example


def cell(model: str, quantizer: str, metric: str, scores: list[float]) -> dict:
    by_index = {str(i): {"score": s, "output": f"o{i}"} for i, s in enumerate(scores)}
    config = {"name": quantizer, "method": "none" if quantizer == "fp" else "rtn"}
    return {
        "model": model,
        "target": "natural",
        "quantizer": quantizer,
        "metric": metric,
        "agg_value": sum(scores) / len(scores),
        "quantizer_config": config,
        "value_by_index": by_index,
    }


def results() -> list[dict]:
    """ga brings back 80 % of KnowMem-forget on every example, oeu 10 %; npo 0, 0, 50, 50, 100 %
    of the examples' forgotten amounts: 40 % on average, with an interval across 25 % and 50 %."""
    rows = [cell("target", "fp", "knowmem_forget", TARGET), cell("target", "fp", "knowmem_retain", TARGET)]
    for model, shares in {"ga": [0.8] * 5, "oeu": [0.1] * 5, "npo": [0, 0, 0.5, 0.5, 1]}.items():
        rows.append(cell(model, "fp", "knowmem_forget", UNLEARNED))
        back = [u + share * 50 for u, share in zip(UNLEARNED, shares, strict=True)]
        rows.append(cell(model, "rtn-w4-g32", "knowmem_forget", back))
        rows.append(cell(model, "fp", "knowmem_retain", TARGET))
        rows.append(cell(model, "rtn-w4-g32", "knowmem_retain", TARGET))
    return rows


@pytest.fixture
def run_dir(tmp_path):
    recipe = {"name": "t", "verdict": {"holds_below": 20, "fails_from": 50, "resamples": 500, "seed": 1}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results()))
    return tmp_path


def test_verdict_json_has_the_settings_and_every_forget_cell_worst_first(run_dir) -> None:
    write_report(run_dir)
    verdict = json.loads(RunFolder(run_dir).verdict.read_text())
    assert verdict["settings"] == {
        "holds_below": 20,
        "fails_from": 50,
        "resamples": 500,
        "confidence": 0.95,
        "seed": 1,
    }
    assert verdict["counts"] == {"fails": 1, "partly back": 1, "holds": 1, "undefined": 0}
    ga, npo, oeu = verdict["cells"]  # knowmem_retain is no forget metric: no verdict rows
    assert ga == {
        "model": "ga",
        "target": "natural",
        "quantizer": "rtn-w4-g32",
        "metric": "knowmem_forget",
        "recovery": pytest.approx(80),
        "recovery_ci": pytest.approx([80, 80]),
        "verdict": "fails",
        "crosses_boundary": False,
    }
    assert (npo["model"], npo["verdict"], npo["crosses_boundary"]) == ("npo", "partly back", True)
    assert npo["recovery"] == pytest.approx(40) and npo["recovery_ci"][0] < 20 and npo["recovery_ci"][1] > 50
    assert (oeu["verdict"], oeu["recovery"]) == ("holds", pytest.approx(10))
    assert [c["model"] for c in failing_cells(verdict, 50)] == ["ga"]
    assert [c["model"] for c in failing_cells(verdict, 5)] == ["ga", "npo", "oeu"]
    assert not list(run_dir.glob(".*.tmp"))  # written through a temporary file, replaced


def test_report_opens_with_the_verdict_and_shows_intervals(run_dir) -> None:
    text = write_report(run_dir).read_text()
    assert text.index("## Verdict") < text.index("Rows: the target") < text.index("## KnowMem on forget")
    assert "3 cells (unlearned model × quantizer or relearn column × forget metric): " in text
    assert "**1 fails, 1 partly back, 1 holds, 0 undefined**" in text
    assert "| fails | ga | natural | rtn-w4-g32 | knowmem_forget | 80% [80%, 80%] |" in text
    assert "holds: the whole recovery interval is below 20 %" in text  # the recipe's threshold
    # a metric cell: value [interval]; the target's values are spread, so its interval is not a point
    target_row = next(line for line in text.splitlines() if line.startswith("| target | natural | 70.0 ["))
    low, high = (float(x) for x in target_row.split("[")[1].split("]")[0].split(","))
    assert 50 <= low < 70 < high <= 90
    assert "| ga | natural | 20.0 [" in text and "(80% [80%, 80%]) |" in text
    npo = next(line for line in text.splitlines() if line.startswith("| npo | natural |"))
    assert "%]~)" in npo  # its interval crosses a threshold
    page = (run_dir / "report.html").read_text()
    assert page.index("Verdict") < page.index("KnowMem on forget")
    assert '<td class="back">fails</td>' in page and '<td class="kept">holds</td>' in page
    assert "holds: interval below 20 %" in page


def test_without_a_verdict_section_the_defaults_apply(run_dir) -> None:
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"name": "t"}))
    write_report(run_dir)
    verdict = json.loads(RunFolder(run_dir).verdict.read_text())
    assert verdict["settings"]["holds_below"] == 25 and verdict["settings"]["resamples"] == 1000
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"name": "t", "verdict": {"fails_from": 10}}))
    with pytest.raises(UserError, match=r"recipe.yaml: verdict: fails_from \(10.0\) must be above"):
        write_report(run_dir)


def test_one_cell_function_serves_every_view() -> None:
    cells = AuditCells(results())
    ga = cells.get("ga", "natural", "rtn-w4-g32", "knowmem_forget")
    assert ga.recovery.value == pytest.approx(0.8) and ga.verdict == "fails"
    retain = cells.get("ga", "natural", "rtn-w4-g32", "knowmem_retain")
    assert retain.recovery is not None and retain.verdict is None  # a ratio but no verdict row
    assert cells.get("target", "natural", "fp", "knowmem_forget").recovery is None
    assert ga.text() in render_markdown(results(), "t", cells)
