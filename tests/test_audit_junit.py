"""`--junit FILE`: the release gate as JUnit XML, one test case per gating cell, read back by
junitparser and by the standard library's parser."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from helpers import gate_results
from junitparser import Failure, JUnitXml, Skipped

from llm_unlearn.audit.junit import write_junit
from llm_unlearn.audit.report import AuditCells, failing_cells
from llm_unlearn.audit.write import write_report
from llm_unlearn.cli import main
from llm_unlearn.runfolder import RunFolder


@pytest.fixture(scope="module")
def verdict() -> dict:
    return AuditCells(gate_results()).verdict()


@pytest.mark.parametrize("fail_above", [50, 5])
def test_one_case_per_gating_cell_failing_where_the_gate_fails(verdict, tmp_path, fail_above) -> None:
    path = write_junit(verdict, fail_above, "run", tmp_path / "ci" / "gate.xml")
    gating = [c for c in verdict["cells"] if c["gates"]]
    failing = {(c["model"], c["quantizer"], c["metric"]) for c in failing_cells(verdict, fail_above)}
    nothing = [c for c in gating if c["verdict"] == "nothing to forget"]

    cases = list(next(iter(JUnitXml.fromfile(str(path)))))
    assert len(cases) == len(gating) == 5
    failed = {
        (case.classname.removesuffix("@natural"), *case.name.split("/"))
        for case in cases
        if any(isinstance(r, Failure) for r in case.result)
    }
    assert (
        failed
        == failing
        == (
            {("weak", "fp", "knowmem_forget"), ("ga", "rtn-w4-g32", "knowmem_forget")}
            | ({("oeu", "rtn-w4-g32", "knowmem_forget")} if fail_above == 5 else set())
        )
    )
    assert sum(any(isinstance(r, Skipped) for r in case.result) for case in cases) == len(nothing) == 2

    suite = ET.parse(path).getroot().find("testsuite")
    assert suite.get("name") == "run"
    assert (int(suite.get("tests")), int(suite.get("failures")), int(suite.get("skipped"))) == (
        5, len(failing), 2,
    )  # fmt: skip
    ga = suite.find("testcase[@classname='ga@natural'][@name='rtn-w4-g32/knowmem_forget']/failure")
    assert ga.get("message") == "recovery 80% [80%, 80%]: fails"
    weak = suite.find("testcase[@classname='weak@natural']/failure")
    assert weak.get("message").startswith("not forgotten: unlearning moved knowmem_forget by 2.0")


def test_the_cli_writes_it_beside_the_gate(tmp_path, monkeypatch, capsys) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    folder.results.write_text("".join(json.dumps(r) + "\n" for r in gate_results()))
    write_report(folder.root)
    monkeypatch.setattr("llm_unlearn.pipeline.run", lambda recipe: folder.root)
    out = tmp_path / "gate.xml"
    assert main(["demo", "--fail-above", "50", "--junit", str(out)]) == 1
    assert f"junit: {out}" in capsys.readouterr().out
    suite = ET.parse(out).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "2")

    assert main(["demo", "--junit", str(out)]) == 2  # a report of the gate needs its threshold
    assert "give --fail-above PCT too" in capsys.readouterr().err
    assert main(["audit", "--fail-above", "5", "--junit", str(tmp_path)]) == 2
    assert "is a folder; give an XML file name" in capsys.readouterr().err


def test_a_gate_on_attacks_skips_the_shipped_cells_and_keeps_every_state(verdict, tmp_path) -> None:
    # every column of this run ships (fp, rtn): under --fail-on attack only a model's state can fail
    path = write_junit(verdict, 5, "run", tmp_path / "gate.xml", fail_on="attack")
    suite = ET.parse(path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "4")
    assert suite.find("testcase[@classname='weak@natural']/failure") is not None
    ga = suite.find("testcase[@classname='ga@natural'][@name='rtn-w4-g32/knowmem_forget']/skipped")
    assert ga.get("message") == "not gated: the gate reads attack routes (--fail-on)"
