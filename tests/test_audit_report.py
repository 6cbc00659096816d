"""The verdict of a run folder: verdict.json, the report opening with it, intervals in every cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llm_unlearn.audit.report import FAIL_ON, AuditCells, failing_cells, gate_summary, render_markdown
from llm_unlearn.audit.write import write_report
from llm_unlearn.cli import main
from llm_unlearn.columns import get_column
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
    of the examples' forgotten amounts: 40 % on average, with an interval across 25 % and 50 %;
    weak forgot 10 points on one example of five only (2 on average), an interval reaching 0: not
    forgotten, whatever its 4-bit cell shows."""
    rows = [cell("target", "fp", "knowmem_forget", TARGET), cell("target", "fp", "knowmem_retain", TARGET)]
    rows.append(cell("weak", "fp", "knowmem_forget", [40.0, *TARGET[1:]]))
    rows.append(cell("weak", "rtn-w4-g32", "knowmem_forget", TARGET))
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
        "metrics": None,
    }
    assert verdict["counts"] == {
        "not forgotten": 1,
        "fails": 1,
        "partly back": 1,
        "holds": 1,
        "nothing to forget": 0,
    }
    weak, ga, npo, oeu = verdict["cells"]  # knowmem_retain is no forget metric: no verdict rows
    assert ga == {
        "model": "ga",
        "target": "natural",
        "quantizer": "rtn-w4-g32",
        "metric": "knowmem_forget",
        "recovery": pytest.approx(80),
        "recovery_ci": pytest.approx([80, 80]),
        "verdict": "fails",
        "crosses_boundary": False,
        "gates": True,
        "route": "shipped",
        "forgotten": 50.0,
        "forgotten_ci": [50.0, 50.0],
        "known": 70.0,  # no retrain model: the target's KnowMem above ROUGE's floor, 0
        "known_ci": [pytest.approx(x) for x in verdict["cells"][1]["known_ci"]],
        "known_against": "floor",
        "why": "rtn-w4-g32 brings back 80% [80%, 80%] of the 50.0 [50.0, 50.0] knowmem_forget forgotten",
    }
    # one row in the fp column: the state is the model's at full precision, not a column's
    assert (weak["model"], weak["quantizer"], weak["verdict"]) == ("weak", "fp", "not forgotten")
    assert weak["forgotten"] == 2.0 and weak["forgotten_ci"][0] == 0 and weak["recovery"] is None
    assert weak["why"].startswith("unlearning moved knowmem_forget by 2.0 [0.0, ")
    assert (npo["model"], npo["verdict"], npo["crosses_boundary"]) == ("npo", "partly back", True)
    assert npo["recovery"] == pytest.approx(40) and npo["recovery_ci"][0] < 20 and npo["recovery_ci"][1] > 50
    assert (oeu["verdict"], oeu["recovery"]) == ("holds", pytest.approx(10))
    # the gate: a model not shown to forget fails it at any threshold
    assert [c["model"] for c in failing_cells(verdict, 50)] == ["weak", "ga"]
    assert [c["model"] for c in failing_cells(verdict, 5)] == ["weak", "ga", "npo", "oeu"]
    assert [(m["model"], m["verdict"]) for m in verdict["models"]] == [
        ("weak", "not forgotten"),
        ("ga", "fails"),
        ("npo", "partly back"),
        ("oeu", "holds"),
    ]
    assert not list(run_dir.glob(".*.tmp"))  # written through a temporary file, replaced


def test_report_opens_with_each_models_verdict_and_shows_intervals(run_dir) -> None:
    text = write_report(run_dir).read_text()
    legend, per_model = (
        text.index("not forgotten: the target knows"),
        text.index("| model | target | verdict"),
    )
    assert text.index("## Verdict") < legend < per_model < text.index("Rows: the target")
    assert text.index("Rows: the target") < text.index("### KnowMem on forget")
    # a state holds for every route; a model without an attack column has no worst attack
    assert "| weak | natural | **not forgotten** | not forgotten | not forgotten | unlearning moved" in text
    assert (
        "| ga | natural | **fails** | fails: rtn-w4-g32 knowmem_forget 80% [80%, 80%] | – | rtn-w4-g32 brings"
        in text
    )
    assert "Every verdict row, worst first (4): " in text
    assert "**1 not forgotten, 1 fails, 1 partly back, 1 holds, 0 nothing to forget**" in text
    assert "| fails | ga | natural | rtn-w4-g32 | knowmem_forget | 80% [80%, 80%] |" in text
    assert "holds: all of it is below 20 %" in text  # the recipe's threshold
    # the weak model's 4-bit cell: its value and why it has no recovery
    weak = next(line for line in text.splitlines() if line.startswith("| weak | natural | 68.0 ["))
    assert weak.endswith("] (not forgotten) | 70.0 [58.0, 82.0] (not forgotten) |")
    # a metric cell: value [interval]; the target's values are spread, so its interval is not a point
    target_row = next(line for line in text.splitlines() if line.startswith("| target | natural | 70.0 ["))
    low, high = (float(x) for x in target_row.split("[")[1].split("]")[0].split(","))
    assert 50 <= low < 70 < high <= 90
    assert "| ga | natural | 20.0 [" in text and "(80% [80%, 80%]) |" in text
    npo = next(line for line in text.splitlines() if line.startswith("| npo | natural | 20.0 ["))
    assert "%]~)" in npo  # its interval crosses a threshold
    page = (run_dir / "report.html").read_text()
    assert page.index("Verdict") < page.index('<span class="never">not forgotten</span>')
    assert page.index('<span class="none">nothing to forget</span>') < page.index("<th>model</th>")
    assert page.index("<b>not forgotten</b>") < page.index("KnowMem on forget")
    assert '<td class="back">fails</td>' in page and '<td class="kept">holds</td>' in page
    assert "holds: all of it is below 20 %" in page


def test_without_a_verdict_section_the_defaults_apply(run_dir) -> None:
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"name": "t"}))
    write_report(run_dir)
    verdict = json.loads(RunFolder(run_dir).verdict.read_text())
    assert verdict["settings"]["holds_below"] == 25 and verdict["settings"]["resamples"] == 1000
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"name": "t", "verdict": {"fails_from": 10}}))
    with pytest.raises(UserError, match=r"recipe.yaml: verdict: fails_from \(10.0\) must be above"):
        write_report(run_dir)


def test_the_recipe_chooses_the_metrics_that_gate(run_dir) -> None:
    recipe = {"name": "t", "verdict": {"metrics": ["verbmem"]}}
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    write_report(run_dir)
    verdict = json.loads(RunFolder(run_dir).verdict.read_text())
    assert verdict["settings"]["metrics"] == ["verbmem"]
    # knowmem_forget keeps its verdicts, but gates nothing: no failing cell, no model answer
    assert verdict["counts"]["fails"] == 1 and not any(c["gates"] for c in verdict["cells"])
    assert failing_cells(verdict, 5) == [] and verdict["models"] == []
    (run_dir / "recipe.yaml").write_text(
        yaml.safe_dump({"name": "t", "verdict": {"metrics": ["knowmem_retain"]}})
    )
    with pytest.raises(UserError, match="'knowmem_retain' is not a forget metric"):
        write_report(run_dir)


def test_each_model_gets_its_worst_route_of_each_kind_and_the_gate_reads_the_routes_named(run_dir) -> None:
    # oeu holds as shipped (10 %) but a relearning attack brings back 90 %; ga has no attack column
    rows = results()
    relearned = [u + 0.9 * 50 for u in UNLEARNED]
    attack = cell("oeu", "relearn-forget-2", "knowmem_forget", relearned)
    attack["quantizer_config"] = {"name": "relearn-forget-2", "method": "relearn"}
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, attack]))
    write_report(run_dir)
    verdict = json.loads(RunFolder(run_dir).verdict.read_text())
    oeu = next(m for m in verdict["models"] if m["model"] == "oeu")
    assert (oeu["verdict"], oeu["quantizer"], oeu["recovery"]) == (
        "fails",
        "relearn-forget-2",
        pytest.approx(90),
    )
    assert oeu["routes"]["shipped"]["verdict"] == "holds"
    assert oeu["routes"]["shipped"]["recovery"] == pytest.approx(10)
    assert oeu["routes"]["attack"]["quantizer"] == "relearn-forget-2"
    ga = next(m for m in verdict["models"] if m["model"] == "ga")
    assert ga["routes"]["attack"] is None and ga["routes"]["shipped"]["verdict"] == "fails"
    weak = next(m for m in verdict["models"] if m["model"] == "weak")  # a state counts for every route
    assert weak["routes"]["shipped"]["verdict"] == weak["routes"]["attack"]["verdict"] == "not forgotten"
    on = {r: [(c["model"], c["quantizer"]) for c in failing_cells(verdict, 50, r)] for r in FAIL_ON}
    assert on["shipped"] == [("weak", "fp"), ("ga", "rtn-w4-g32")]
    assert on["attack"] == [("weak", "fp"), ("oeu", "relearn-forget-2")]
    assert on["any"] == [("weak", "fp"), ("oeu", "relearn-forget-2"), ("ga", "rtn-w4-g32")]
    lines, failed = gate_summary(verdict, 50, "verdict.json", "attack")
    assert (
        failed
        and "gate (a recovery under attack above 50 % or a model not shown to forget): FAIL, 2 cells" in lines
    )
    assert any(
        "as shipped: holds, rtn-w4-g32 10% · under attack: fails, relearn-forget-2 90%" in line
        for line in lines
    )
    text = (run_dir / "report.md").read_text()
    assert (
        "| oeu | natural | **fails** | holds: rtn-w4-g32 knowmem_forget 10% [10%, 10%] | "
        "fails: relearn-forget-2" in text
    )


def test_one_cell_function_serves_every_view() -> None:
    cells = AuditCells(results())
    ga = cells.get("ga", "natural", "rtn-w4-g32", "knowmem_forget")
    assert ga.recovery.value == pytest.approx(0.8) and ga.verdict == "fails"
    retain = cells.get("ga", "natural", "rtn-w4-g32", "knowmem_retain")
    assert retain.recovery is not None and retain.verdict is None  # a ratio but no verdict row
    assert cells.get("target", "natural", "fp", "knowmem_forget").recovery is None
    assert ga.text() in render_markdown(results(), "t", cells)


#: The issue's run: a 27-line gradient-ascent script (8 forget texts) from a grid-aligned target.
#: VerbMem moved 13.9 points at full precision, all of it on examples that each moved (every d_i > 0,
#: so F's interval excludes 0) but unevenly (two examples carry most of it: the interval is about
#: 29 points wide, wider than the move); rtn-w4-g128 brings back 70 % of every d_i, rtn-w4-g32 96 %.
ISSUE_TARGET = [70.0, 65.0, 72.0, 60.0, 68.0, 66.0, 70.0, 70.6]  # mean 67.7
ISSUE_MOVED = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 40.0, 59.2]  # mean 13.9


def issue_results() -> list[dict]:
    unlearned = [t - d for t, d in zip(ISSUE_TARGET, ISSUE_MOVED, strict=True)]
    rows = [cell("target", "fp", "verbmem", ISSUE_TARGET), cell("ga", "fp", "verbmem", unlearned)]
    for quantizer, share in (("rtn-w8", 0.0), ("rtn-w4-g128", 0.7), ("rtn-w4-g32", 0.96)):
        back = [u + share * d for u, d in zip(unlearned, ISSUE_MOVED, strict=True)]
        rows.append(cell("ga", quantizer, "verbmem", back))
    return rows


def test_the_issues_small_noisy_forgetting_fails_the_gate(tmp_path, monkeypatch, capsys) -> None:
    folder = RunFolder(tmp_path)
    folder.results.write_text("".join(json.dumps(r) + "\n" for r in issue_results()))
    cells = AuditCells(issue_results())
    fp = cells.forgetting("ga", "natural", "verbmem")
    (lo, hi), moved = fp.forgotten.ci, fp.forgotten.value
    assert moved == pytest.approx(13.9) and lo > 0 and hi - lo > moved  # the old rule's blank
    assert fp.state == "forgotten"
    g32 = cells.get("ga", "natural", "rtn-w4-g32", "verbmem")
    assert g32.recovery.value == pytest.approx(0.96) and g32.verdict == "fails"

    # the CLI's gate on that run folder, as `llm-unlearn demo --fail-above 25` reads it after a run
    def run(recipe) -> Path:
        write_report(tmp_path)
        return tmp_path

    monkeypatch.setattr("llm_unlearn.pipeline.run", run)
    assert main(["demo", "--fail-above", "25"]) == 1
    out = capsys.readouterr().out
    assert "gate (a recovery above 25 % or a model not shown to forget): FAIL, 2 cells" in out
    assert "  ga@natural: fails: rtn-w4-g32 brings back 96% [96%, 96%] of the 13.9 [" in out
    assert "  ga@natural: fails: rtn-w4-g128 brings back 70% [70%, 70%]" in out
    assert (
        main(["demo", "--fail-above", "97"]) == 0 and "gate (a recovery above 97 %" in capsys.readouterr().out
    )
    assert main(["demo"]) == 0  # no gate asked for: the verdict is printed, the exit code is 0
    # every column here is a format the model ships in: a gate on attacks alone passes it
    assert main(["demo", "--fail-above", "25", "--fail-on", "attack"]) == 0
    assert "gate (a recovery under attack above 25 %" in capsys.readouterr().out
    assert main(["demo", "--fail-above", "25", "--fail-on", "shipped"]) == 1


def test_report_shows_recovery_against_the_same_target() -> None:
    def rec(model, target, q, value):
        return {
            "model": model,
            "target": target,
            "quantizer": q,
            "metric": "knowmem_forget",
            "agg_value": value,
        }

    results = [
        rec("target", "grid-aligned", "fp", 80.0),
        rec("target", "grid-aligned", "rtn-w4-g32", 80.0),
        rec("target", "natural", "fp", 60.0),
        rec("ga", "grid-aligned", "fp", 20.0),
        rec("ga", "grid-aligned", "rtn-w4-g32", 50.0),
        rec("ga", "natural", "fp", 20.0),
        rec("ga", "natural", "rtn-w4-g32", 30.0),
    ]
    text = render_markdown(results, "t")
    assert "| ga | grid-aligned | 20.0 | 50.0 (50%) |" in text  # (50 - 20) / (80 - 20)
    assert "| ga | natural | 20.0 | 30.0 (25%) |" in text  # (30 - 20) / (60 - 20)


def test_a_column_with_cells_for_some_metrics_only(run_dir) -> None:
    """An in-context column has KnowMem-forget cells and none for KnowMem-retain: the verdict takes
    it as an attack route, and every table and page is written, a metric's table without the
    columns that never evaluate it."""
    config = get_column("incontext-forget-3").config()
    rows = results()
    for model, share in {"target": 0.0, "ga": 0.1, "oeu": 0.9}.items():
        base = TARGET if model == "target" else UNLEARNED
        back = cell(model, "incontext-forget-3", "knowmem_forget", [u + share * 50 for u in base])
        rows.append({**back, "quantizer_config": config})
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(run_dir).read_text()
    verdict = json.loads(RunFolder(run_dir).verdict.read_text())
    in_context = {c["model"]: c for c in verdict["cells"] if c["quantizer"] == "incontext-forget-3"}
    assert set(in_context) == {"ga", "oeu"}  # forget cells of unlearned models only
    assert in_context["oeu"]["recovery"] == pytest.approx(90) and in_context["oeu"]["verdict"] == "fails"
    assert in_context["ga"]["recovery"] == pytest.approx(10) and in_context["ga"]["verdict"] == "holds"
    assert "incontext-forget-3" in text and (run_dir / "report.html").is_file()
    retain = text[text.index("### KnowMem on retain") :].split("\n\n")[1].splitlines()
    assert retain[0].endswith("| rtn-w4-g32 |")  # no retain cell in the column: not in the table
    forget = text[text.index("### KnowMem on forget") :].split("\n\n")[1].splitlines()
    assert forget[0].endswith("| rtn-w4-g32 | incontext-forget-3 |")
    html = (run_dir / "report.html").read_text()
    assert html.count("<th>incontext-forget-3</th>") == 1  # KnowMem on forget's table alone
