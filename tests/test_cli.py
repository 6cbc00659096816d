"""cli.py: `evaluate` takes each metric's retrain reference by hand through the flag its
`RetrainReference` declares (metrics/), and hands the value to the metric."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_llama

from llm_unlearn.audit.run import AuditModel
from llm_unlearn.cli import AUDIT_QUANTIZERS, _default_quantizers, _parser, demo_recipe, main
from llm_unlearn.metrics import METRICS
from llm_unlearn.metrics.privleak import privleak_value
from llm_unlearn.models import save_checkpoint
from llm_unlearn.pipeline import _audited_entry, resolve_sources
from llm_unlearn.runfolder import RunFolder

EVALUATE = ["evaluate", "--model", "m", "--data", "d", "--out", "o.json"]


def test_evaluate_has_the_flag_of_every_registered_reference_and_parses_it() -> None:
    flags = {
        metric.reference.flag.name
        for metric in (METRICS.get(name) for name in METRICS.names())
        if metric.reference is not None and metric.reference.flag is not None
    }
    assert flags == {"--reference-auc", "--reference-truth-ratios"}  # the names users already type
    args = _parser().parse_args([*EVALUATE, "--reference-auc", "0.4", "--reference-truth-ratios", "r.json"])
    assert (args.reference_auc, args.reference_truth_ratios) == (0.4, Path("r.json"))
    args = _parser().parse_args(EVALUATE)
    assert (args.reference_auc, args.reference_truth_ratios) == (None, None)


@pytest.mark.parametrize("text", ["0", "1.5", "nan", "x"])
def test_a_bad_auc_is_a_usage_error(text: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args([*EVALUATE, "--reference-auc", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --reference-auc:" in err and ("an AUC in (0, 1]" in err or "is not a number" in err)


def test_a_given_auc_is_privleaks_reference(tok, tmp_path) -> None:
    model = save_checkpoint(tiny_llama(tok), tok, tmp_path / "model")
    out = tmp_path / "out.json"
    command = ["evaluate", "--model", str(model), "--data", "demo", "--metrics", "privleak", "--limit", "4"]
    assert main([*command, "--reference-auc", "0.4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["privleak"]
    assert result["reference_auc"] == 0.4
    assert result["agg_value"] == pytest.approx(privleak_value(result["auc"], 0.4))


# Each command line is refused (or answered) without importing torch or transformers: the path,
# YAML and --set checks come before the registries that validate a recipe.
#: a command line that passes the checks on paths, to which each case adds its mistake
AUDIT_HERE = ["audit", "--target", "{tmp}", "--model", "a={tmp}", "--data", "demo", "--out", "{tmp}/o"]
EVALUATE_HERE = ["evaluate", "--model", "{tmp}", "--data", "demo", "--out", "{tmp}/o.json"]
CHECK_SET = ["check", "{tmp}/q.yaml", "--set"]
QUICK = {
    "missing recipe": (["check", "{tmp}/missing.yaml"], 2, "recipe file not found"),
    "help": (["--help"], 0, "check"),
    "bad --set": (["check", "{tmp}/r.yaml", "--set", "x"], 2, "expected KEY.PATH=VALUE"),
    "run, missing recipe": (["run", "{tmp}/missing.yaml"], 2, "recipe file not found"),
    "audit, a flag missing": (["audit", "--target", "t", "--out", "{tmp}/o"], 2, "--model is required"),
    "cnn, missing recipe": (["cnn", "{tmp}/missing.yaml"], 2, "recipe file not found"),
    "report, no results": (["report", "{tmp}"], 2, "no results in results.jsonl"),
    "check, misspelled quantizer": (
        ["check", "{tmp}/q.yaml"],
        2,
        "q.yaml: quantize: malformed name 'rtn-w5'",
    ),
    "check, unknown column": ([*CHECK_SET, "quantize=[rtm-w4]"], 2, "quantize: unknown quantizer 'rtm-w4'"),
    "check, unknown metric": (
        [*CHECK_SET, "quantize=[fp]", "--set", "evaluate=[verbmemm]"],
        2,
        "evaluate: unknown metric 'verbmemm'",
    ),
    "check, unknown method": ([*CHECK_SET, "method.0.name=npoo"], 2, "method.0.name: unknown method 'npoo'"),
    "run, missing target": (
        ["run", "{tmp}/q.yaml", "--set", "quantize=[fp]"],
        2,
        "model.target: folder '{tmp}/none' not found",
    ),
    "audit, missing target": (
        ["audit", "--target", "{tmp}/none", "--model", "a={tmp}", "--data", "demo", "--out", "{tmp}/o"],
        2,
        "model.target: folder '{tmp}/none' not found",
    ),
    "audit, missing model": (
        ["audit", "--target", "{tmp}", "--model", "a={tmp}/none", "--data", "demo", "--out", "{tmp}/o"],
        2,
        "models.0.path: folder '{tmp}/none' not found",
    ),
    "audit, malformed --model": (
        ["audit", "--target", "{tmp}", "--model", "a", "--data", "demo", "--out", "{tmp}/o"],
        2,
        "--model 'a': expected NAME=PATH",
    ),
    "audit, misspelled quantizer": (
        [*AUDIT_HERE, "--quantize", "fp,rtn-w5"],
        2,
        "audit: quantize: malformed name 'rtn-w5'",
    ),
    "audit, unknown metric": ([*AUDIT_HERE, "--metrics", "foo"], 2, "audit: evaluate: unknown metric 'foo'"),
    "verify, no certificate": (["verify", "{tmp}", "{tmp}/r.yaml"], 2, "no certificate.json here"),
    "verify, nothing to ship": (["verify", "{tmp}/run", "{tmp}/none"], 2, "/none: no such file or folder"),
    "push, no run": (["push", "{tmp}", "--repo-id", "org/name"], 2, "no recipe.yaml and results.jsonl here"),
    "diagnose, missing target": (
        ["diagnose", "{tmp}/none", "{tmp}"],
        2,
        "TARGET: folder '{tmp}/none' not found",
    ),
    "diagnose, missing unlearned": (
        ["diagnose", "{tmp}", "{tmp}/none"],
        2,
        "UNLEARNED: folder '{tmp}/none' not found",
    ),
    "diagnose, misspelled quantizer": (
        ["diagnose", "{tmp}", "{tmp}", "--quantizer", "rtn-w5"],
        2,
        "malformed name 'rtn-w5'",
    ),
    "diagnose, --out a folder": (
        ["diagnose", "{tmp}", "{tmp}", "--out", "{tmp}"],
        2,
        "is a folder; give a JSON file name",
    ),
    "evaluate, missing model": (
        ["evaluate", "--model", "{tmp}/none", "--data", "demo", "--out", "{tmp}/o.json"],
        2,
        "--model: folder '{tmp}/none' not found",
    ),
    "evaluate, unknown metric": ([*EVALUATE_HERE, "--metrics", "foo"], 2, "unknown metric 'foo'"),
    "evaluate, --out a folder": (
        ["evaluate", "--model", "{tmp}", "--data", "demo", "--out", "{tmp}"],
        2,
        "is a folder; give a JSON file name",
    ),
    "evaluate, a flag missing": (
        ["evaluate", "--model", "{tmp}"],
        2,
        "the following arguments are required: --data, --out",
    ),
    "verify --help": (["verify", "--help"], 0, "certificate"),
    "evaluate --help": (["evaluate", "--help"], 0, "--reference-truth-ratios"),
    "diagnose --help": (["diagnose", "--help"], 0, "--trust-remote-code"),
    "evaluate, missing data": (
        ["evaluate", "--model", "{tmp}", "--data", "{tmp}/none", "--out", "{tmp}/o.json"],
        2,
        "--data: folder '{tmp}/none' not found",
    ),
    "audit, missing data": (
        ["audit", "--target", "{tmp}", "--model", "a={tmp}", "--data", "{tmp}/none", "--out", "{tmp}/o"],
        2,
        "data.source: folder '{tmp}/none' not found",
    ),
    "run, missing data": (
        ["run", "{tmp}/q.yaml", *["--set", "quantize=[fp]", "--set", "model.target={tmp}"]]
        + ["--set", "data.source={tmp}/none"],
        2,
        "data.source: folder '{tmp}/none' not found",
    ),
    "push, unknown model": (
        ["push", "{tmp}/run", "--repo-id", "org/name", "--model", "npo@grid"],
        2,
        "--model 'npo@grid' is not one of its unlearned models: none",
    ),
    "push, bad repo id": (["push", "{tmp}/run", "--repo-id", "a/b/c"], 2, "--repo-id 'a/b/c': give ORG/NAME"),
    "demo, two demos": (["demo", "--quick", "--full"], 2, "--full and --quick are two demos"),
    "demo, quick TOFU": (["demo", "--quick", "--benchmark", "tofu"], 2, "--quick is the MUSE demo's"),
}


@pytest.mark.parametrize("argv, code, text", QUICK.values(), ids=QUICK.keys())
def test_refusals_do_not_import_torch(tmp_path: Path, argv: list[str], code: int, text: str) -> None:
    (tmp_path / "r.yaml").write_text("name: a\n")
    recipe = {"model": {"target": f"{tmp_path}/none"}, "method": [{"name": "npo"}], "quantize": ["rtn-w5"]}
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({**recipe, "output": {"dir": f"{tmp_path}/o"}}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "certificate.json").write_text("{}")
    (tmp_path / "run" / "recipe.yaml").write_text("name: a\n")  # a run, with no unlearned model
    (tmp_path / "run" / "results.jsonl").write_text("{}\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    text = text.format(tmp=tmp_path)
    script = (
        "import sys\nfrom llm_unlearn.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exit:\n    code = exit.code\n"
        "heavy = sorted({'torch', 'transformers'} & set(sys.modules))\n"
        "assert not heavy, heavy\nsys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60)
    assert "AssertionError" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    assert text in done.stdout + done.stderr


def test_audit_defaults_to_the_targets_grid_where_it_is_known(tmp_path: Path) -> None:
    demo_grid = yaml.safe_load(demo_recipe().read_text())["model"]["grid_align"]
    assert _default_quantizers("demo") == f"fp,rtn-w8,{demo_grid},cast-fp16,cast-bf16"
    quick_grid = yaml.safe_load(demo_recipe(quick=True).read_text())["model"]["grid_align"]
    assert _default_quantizers("demo_quick") == f"fp,rtn-w8,{quick_grid},cast-fp16,cast-bf16"
    run = tmp_path / "run"
    RunFolder(run).models.mkdir(parents=True)
    RunFolder(run).write_recipe({"model": {"target": "org/m", "grid_align": "rtn-w4-g64-asym"}})
    aligned = run / "models" / "target@grid-aligned"
    assert _default_quantizers(str(aligned)) == "fp,rtn-w8,rtn-w4-g64-asym,cast-fp16,cast-bf16"
    assert _default_quantizers(f"released={aligned}") == "fp,rtn-w8,rtn-w4-g64-asym,cast-fp16,cast-bf16"
    # anything else, the run's natural target included: the generic default
    assert _default_quantizers(str(run / "models" / "ga@grid-aligned")) == AUDIT_QUANTIZERS
    assert _default_quantizers("org/model") == AUDIT_QUANTIZERS


def test_audit_against_the_demo_models_and_the_demo_prints_them(tmp_path, tok, monkeypatch, capsys) -> None:
    """`audit --target demo --retrain demo` resolves the demo's cached models (built on first use),
    and the demo's end prints where they are and that command."""
    cached = {
        n: save_checkpoint(tiny_llama(tok, seed=s), tok, tmp_path / n)
        for n, s in (("target", 0), ("retrain", 1))
    }
    monkeypatch.setattr("llm_unlearn.pipeline.demo_checkpoints", lambda names: {n: cached[n] for n in names})
    ran = []

    def run(recipe) -> Path:
        ran.append(recipe)
        folder = RunFolder(tmp_path / "run")
        folder.root.mkdir(exist_ok=True)
        folder.write_audited([_audited_entry(m, recipe) for m in demo_models(recipe)])
        return folder.root

    def demo_models(recipe) -> list[AuditModel]:
        sources = resolve_sources(recipe)
        return [
            AuditModel("target", "natural", sources["model.target"].path),
            AuditModel("retrain", "-", sources["model.retrain"].path),
        ]

    monkeypatch.setattr("llm_unlearn.pipeline.run", run)
    mine = f"mine={cached['target']}"
    assert (
        main(
            [
                "audit",
                "--target",
                "demo",
                "--retrain",
                "demo",
                "--data",
                "demo",
                "--model",
                mine,
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    (recipe,) = ran
    assert (recipe.model.target, recipe.model.retrain, recipe.data.source) == ("demo", "demo", "demo")
    # the default battery, its 4-bit column on the demo's grid; the attacks where a metric has cells
    assert list(recipe.quantize) == [
        "fp", "rtn-w8", "rtn-w4-g32", "cast-fp16", "cast-bf16", "prune-mag-50", "incontext-forget-3",
    ]  # fmt: skip
    assert [(r.split, r.lora is not None) for r in recipe.relearn] == [("forget", False), ("forget", True)]
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert f"demo target: {cached['target']}\n" in out and f"demo retrain: {cached['retrain']}\n" in out
    assert "llm-unlearn audit --target demo --retrain demo --data demo --model NAME=PATH" in out
    # the quick demo: its own target, the demo's retrain model
    cached["quick-target"] = save_checkpoint(tiny_llama(tok, seed=2), tok, tmp_path / "quick-target")
    assert main(["demo", "--quick"]) == 0
    assert (ran[-1].name, ran[-1].model.target, ran[-1].model.retrain) == ("demo_quick", "demo_quick", "demo")
    out = capsys.readouterr().out
    assert f"demo target: {cached['quick-target']}\n" in out and f"demo retrain: {cached['retrain']}\n" in out
    assert "llm-unlearn audit --target demo_quick --retrain demo --data demo --model NAME=PATH" in out


def test_the_default_battery_leaves_out_what_no_metric_reads_and_relearn_none_drops_relearning(
    tmp_path, monkeypatch
) -> None:
    ran = []
    monkeypatch.setattr("llm_unlearn.pipeline.run", lambda recipe: ran.append(recipe) or tmp_path)
    base = [
        "audit",
        "--target",
        "org/t",
        "--model",
        "a=org/a",
        "--data",
        "demo",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*base, "--metrics", "verbmem", "--relearn", "none"]) == 0
    assert list(ran[-1].quantize) == ["fp", "rtn-w8", "rtn-w4-g128", "cast-fp16", "cast-bf16", "prune-mag-50"]
    assert ran[-1].relearn == ()
    assert main([*base, "--quantize", "fp,rtn-w8", "--relearn", "retain"]) == 0  # given: as given
    assert list(ran[-1].quantize) == ["fp", "rtn-w8"] and [r.split for r in ran[-1].relearn] == ["retain"]


def test_check_leaves_a_recipes_paths_to_the_machine_that_runs_it(tmp_path: Path, capsys) -> None:
    """`check` validates a recipe written for another machine; `run` refuses its missing target."""
    recipe = {"model": {"target": str(tmp_path / "elsewhere")}, "method": [{"name": "npo"}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**recipe, "output": {"dir": str(tmp_path / "o")}}))
    assert main(["check", str(path)]) == 0
    assert main(["run", str(path)]) == 2
    assert f"model.target: folder '{tmp_path / 'elsewhere'}' not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
