"""The release gate as a JUnit XML report (`--junit FILE`), for CI systems that show test results.

One test case per gating cell of verdict.json (unlearned model × column × forget metric; classname
RUN@TARGET, name column/metric): failing where the gate fails it (`report.failing_cells`), with its
recovery [interval] and verdict as the message; skipped where the model had nothing to forget (the
gate leaves those out); passing otherwise. Written with junitparser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from junitparser import Failure, JUnitXml, Skipped, TestCase, TestSuite

from llm_unlearn.audit import stats
from llm_unlearn.audit.report import failing_cells, in_route, percent


def _message(cell: dict[str, Any]) -> str:
    """`recovery 80% [78%, 82%]: fails`, or the verdict and why where there is no recovery."""
    if cell["recovery"] is None:
        return f"{cell['verdict']}: {cell['why']}"
    ci = cell["recovery_ci"]
    interval = f" [{percent(ci[0] / 100)}, {percent(ci[1] / 100)}]" if ci else ""
    return f"recovery {percent(cell['recovery'] / 100)}{interval}: {cell['verdict']}"


def junit_report(verdict: dict[str, Any], fail_above: float, name: str, fail_on: str = "any") -> JUnitXml:
    """The JUnit report of verdict.json content `verdict` under the gate `fail_above` (percent) on
    the routes `fail_on` names; a cell of another route is skipped."""
    failing = {id(c) for c in failing_cells(verdict, fail_above, fail_on)}
    suite = TestSuite(name)
    suite.add_property("fail_above", f"{fail_above:g}")
    suite.add_property("fail_on", fail_on)
    for cell in verdict["cells"]:
        if not cell.get("gates", True):
            continue
        case = TestCase(f"{cell['quantizer']}/{cell['metric']}", f"{cell['model']}@{cell['target']}")
        if id(cell) in failing:
            case.result = [Failure(_message(cell))]
        elif cell["verdict"] == stats.NOTHING_TO_FORGET:
            case.result = [Skipped(f"{stats.NOTHING_TO_FORGET}: {cell['why']}")]
        elif not in_route(cell, fail_on):
            case.result = [Skipped(f"not gated: the gate reads {fail_on} routes (--fail-on)")]
        suite.add_testcase(case)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.update_statistics()
    return xml


def write_junit(
    verdict: dict[str, Any], fail_above: float, name: str, path: Path, fail_on: str = "any"
) -> Path:
    """Write `junit_report` to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_report(verdict, fail_above, name, fail_on).write(str(path))
    return path
