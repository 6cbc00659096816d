"""The demo end to end, cold (slow: minutes). Checks what the demo must show, not exact numbers."""

from __future__ import annotations

import pytest

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.audit.stats import recovery
from llm_unlearn.cli import demo_recipe, main
from llm_unlearn.models import demo_checkpoints
from llm_unlearn.pipeline import run
from llm_unlearn.recipe import load_recipe
from llm_unlearn.runfolder import RunFolder, read_json


@pytest.mark.slow
def test_demo_shows_recovery_on_the_grid_target_and_robust_methods_resist(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLM_UNLEARN_CACHE", str(tmp_path / "cache"))
    out = run(load_recipe(demo_recipe(), [f"output.dir={tmp_path / 'run'}"]))
    results = ResultsFile(out / "results.jsonl")

    def value(model: str, target: str, quantizer: str, metric: str = "knowmem_forget") -> float:
        return results.get(model, target, quantizer, metric)["agg_value"]

    # the target memorised the forget people; the retrain model never saw them
    assert value("target", "natural", "fp") > 40 > 15 > value("retrain", "-", "fp")
    assert value("target", "natural", "fp", "verbmem") > value("retrain", "-", "fp", "verbmem") + 20
    for method in ("ga_gdr", "npo_gdr", "ga_gdr+sure", "ga_gdr+quail", "oeu"):
        # unlearning lowers the forget metric at full precision, and 8 bits keep that
        unlearned = value(method, "grid-aligned", "fp")
        assert unlearned < value("target", "grid-aligned", "fp") - 20, method
        assert abs(value(method, "grid-aligned", "rtn-w8") - unlearned) < 5, method
    # 4-bit RTN on the grid-aligned target brings most of it back; on the natural target it does not
    for method in ("ga_gdr", "npo_gdr"):
        grid = recovery(
            value(method, "grid-aligned", "rtn-w4-g32"),
            value(method, "grid-aligned", "fp"),
            value("target", "grid-aligned", "fp"),
        )
        natural = recovery(
            value(method, "natural", "rtn-w4-g32"),
            value(method, "natural", "fp"),
            value("target", "natural", "fp"),
        )
        assert grid > 0.5 and natural < 0.25, (method, grid, natural)
    # SURE (larger lr on salient modules) and OEU (its own lr) keep the forgetting at 4 bits on the
    # grid target, at a utility cost of a few points at most. QUAIL's hinge does not help here (see
    # eval/results/demo_report.md), so it is not asserted.
    for method in ("ga_gdr+sure", "oeu"):
        grid = recovery(
            value(method, "grid-aligned", "rtn-w4-g32"),
            value(method, "grid-aligned", "fp"),
            value("target", "grid-aligned", "fp"),
        )
        assert grid < 0.25, (method, grid)
        retain = value(method, "grid-aligned", "fp", "knowmem_retain")
        assert retain > value("ga_gdr", "grid-aligned", "fp", "knowmem_retain") - 10, (method, retain)


@pytest.mark.slow
def test_the_quick_demo_shows_the_same_recovery_and_resistance(tmp_path, monkeypatch) -> None:
    """`demo --quick` (its own target: the retrain model trained on the forget people for 15 epochs):
    4-bit RTN brings GA_GDR's forgetting back on the grid-aligned target, and SURE keeps it."""
    monkeypatch.setenv("LLM_UNLEARN_CACHE", str(tmp_path / "cache"))
    out = run(load_recipe(demo_recipe(quick=True), [f"output.dir={tmp_path / 'run'}"]))
    results = ResultsFile(out / "results.jsonl")

    def value(model: str, quantizer: str, metric: str) -> float:
        target = "-" if model == "retrain" else "grid-aligned"
        return results.get(model, target, quantizer, metric)["agg_value"]

    for metric in ("knowmem_forget", "verbmem"):
        assert value("target", "fp", metric) > value("retrain", "fp", metric) + 20, metric
        back = {
            m: recovery(value(m, "rtn-w4-g32", metric), value(m, "fp", metric), value("target", "fp", metric))
            for m in ("ga_gdr", "ga_gdr+sure")
        }
        assert back["ga_gdr"] > 0.5 and back["ga_gdr+sure"] < 0.25, (metric, back)


@pytest.mark.slow
def test_fail_above_gates_the_grid_target_and_passes_a_model_whose_forgetting_holds(tmp_path) -> None:
    """`--fail-above 25`: exit 1 on the demo (its grid-aligned baselines come back at 4 bits), exit 0
    on an audit of a model whose forgetting holds (OEU on the natural target)."""
    out = tmp_path / "demo"
    assert main(["demo", "--fail-above", "25", "--set", f"output.dir={out}"]) == 1
    failing = [c for c in read_json(RunFolder(out).verdict)["cells"] if c["recovery"] and c["recovery"] > 25]
    assert {c["target"] for c in failing} == {"grid-aligned"}
    target = demo_checkpoints()["target"]
    oeu = RunFolder(out).checkpoint("oeu@natural")
    audit = ["audit", "--target", str(target), "--model", f"oeu={oeu}", "--data", "demo"]
    audit += ["--quantize", "fp,rtn-w8,rtn-w4-g32", "--relearn", "none", "--out", str(tmp_path / "oeu")]
    audit += ["--fail-above", "25"]
    assert main(audit) == 0
