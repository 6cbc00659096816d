"""The whole pipeline on tiny models: recipe -> unlearn -> quantize -> evaluate -> report,
resuming after a kill, and the CLI entry points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import demo_bench_subset, old_run_folder, tiny_llama

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.cli import main
from llm_unlearn.errors import UserError
from llm_unlearn.models import save_checkpoint
from llm_unlearn.pipeline import _calibrations, check_run_folder, load_corpus, run
from llm_unlearn.quant.calibration import GENERIC_TEXT, build_calibration
from llm_unlearn.recipe import load_recipe, validate_recipe
from llm_unlearn.runfolder import RunFolder

METRICS = ["verbmem", "knowmem_forget", "knowmem_retain", "privleak"]
KEEP = {"raw": 6, "verbmem": 2, "knowmem": 3, "privleak": 4}


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory) -> Path:
    """A few records of each split of the demo benchmark, in the MUSE folder layout."""
    return demo_bench_subset(tmp_path_factory.mktemp("muse"), KEEP)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tok) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        name: save_checkpoint(tiny_llama(tok, seed=seed), tok, root / name)
        for name, seed in (("target", 0), ("retrain", 1))
    }


def recipe_file(tmp_path: Path, checkpoints: dict[str, Path], muse_dir: Path) -> Path:
    data = {
        "name": "tiny",
        "model": {
            "target": str(checkpoints["target"]),
            "retrain": str(checkpoints["retrain"]),
            "grid_align": "rtn-w4-g32",
        },
        "data": {"source": str(muse_dir), "max_length": 64},
        "method": [{"name": "ga_gdr"}, {"name": "npo", "targets": ["grid-aligned"]}],
        "train": {
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "learning_rate": 1e-3,
            "disable_tqdm": True,
        },
        "quantize": ["fp", "rtn-w4-g32"],
        "evaluate": METRICS,
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_writes_checkpoints_results_and_report(tmp_path, checkpoints, muse_dir, capfd) -> None:
    out = run(load_recipe(recipe_file(tmp_path, checkpoints, muse_dir)))
    # the terminal shows the run's display only: the Trainer's log dicts and the warnings (torch's
    # pin_memory on a CPU, ...) are in the run's log file
    terminal = capfd.readouterr()
    assert "'loss'" not in terminal.err and "'train_runtime'" not in terminal.err + terminal.out
    assert "warning" not in terminal.err.lower()
    logged = (out / "run.log").read_text()
    assert "unlearning ga_gdr@natural, step 2: {'train_runtime'" in logged
    for name in ("ga_gdr@natural", "ga_gdr@grid-aligned", "npo@grid-aligned", "target@grid-aligned"):
        assert (out / "models" / name / "model.safetensors").is_file(), name
    assert not (out / "models" / "npo@natural").exists()
    records = list(ResultsFile(out / "results.jsonl"))
    # (2 targets + retrain + 3 unlearned) x 2 quantizers x 4 metrics
    assert len(records) == 6 * 2 * 4
    cells = {(r["model"], r["target"], r["quantizer"], r["metric"]) for r in records}
    assert ("npo", "grid-aligned", "rtn-w4-g32", "privleak") in cells
    assert all(isinstance(r["agg_value"], float) and "value_by_index" in r for r in records)
    retrain_fp = next(
        r for r in records if r["model"] == "retrain" and r["quantizer"] == "fp" and r["metric"] == "privleak"
    )
    assert retrain_fp["agg_value"] == 0.0 and retrain_fp["reference"] == "retrain"
    others = [r for r in records if r["metric"] == "privleak" and r["model"] != "retrain"]
    assert all(r["reference_auc"] == retrain_fp["auc"] for r in others)
    report = (out / "report.md").read_text()
    assert "<h1>Quantization-robustness audit: tiny</h1>" in (out / "report.html").read_text()
    assert "## KnowMem on forget" in report and "| ga_gdr | grid-aligned |" in report
    assert "rtn-w4-g32" in report
    log = json.loads((out / "models" / "ga_gdr@natural.log.json").read_text())
    assert any("forget_loss" in entry and "retain_loss" in entry for entry in log)


def test_grid_target_is_its_own_quantization(tmp_path, checkpoints, muse_dir) -> None:
    """The grid-aligned target is unchanged by its quantizer: every metric equal at fp and 4 bits."""
    out = run(
        load_recipe(
            recipe_file(tmp_path, checkpoints, muse_dir), ["method=[{name: ga}]", "train.max_steps=1"]
        )
    )
    results = ResultsFile(out / "results.jsonl")
    for metric in METRICS:
        fp = results.get("target", "grid-aligned", "fp", metric)["agg_value"]
        quantized = results.get("target", "grid-aligned", "rtn-w4-g32", metric)["agg_value"]
        assert quantized == pytest.approx(fp, abs=1e-6)


def test_killed_run_resumes_without_redoing_cells(tmp_path, checkpoints, muse_dir) -> None:
    path = recipe_file(tmp_path, checkpoints, muse_dir)
    results_path = tmp_path / "run" / "results.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_unlearn", str(path)], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if results_path.exists() and results_path.read_text().count("\n") >= 10:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {json.dumps(r, sort_keys=True) for r in ResultsFile(results_path)}
    assert 10 <= len(done) < 48

    run(load_recipe(path))
    after = list(ResultsFile(results_path))
    assert len(after) == 48
    lines = results_path.read_text().splitlines()
    assert len(lines) == 48, "a finished cell was computed again"
    assert done <= {json.dumps(r, sort_keys=True) for r in after}, "a finished cell changed"


def test_torn_last_line_is_cut(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    record = {"model": "m", "target": "-", "quantizer": "fp", "metric": "verbmem", "agg_value": 1.0}
    path.write_text(json.dumps(record) + "\n" + '{"model": "m", "tar')
    results = ResultsFile(path)
    assert len(results) == 1
    results.add({**record, "metric": "privleak"})
    assert [json.loads(line)["metric"] for line in path.read_text().splitlines()] == ["verbmem", "privleak"]


def test_cli_evaluate_and_report(tmp_path, checkpoints, muse_dir, capsys) -> None:
    out = tmp_path / "eval.json"
    args = ["--model", str(checkpoints["target"]), "--data", str(muse_dir), "--out", str(out)]
    assert main(["evaluate", *args, "--metrics", "knowmem_forget,privleak", "--batch-size", "4"]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"knowmem_forget", "privleak"} and results["privleak"]["reference"] == "ideal-0.5"
    assert "knowmem_forget:" in capsys.readouterr().out
    assert main(["evaluate", *args, "--metrics", "verbmen"]) == 2
    assert "unknown metric 'verbmen'" in capsys.readouterr().err
    bad = ["--model", str(tmp_path / "missing"), "--data", str(muse_dir), "--out", str(out)]
    assert main(["evaluate", *bad]) == 2
    assert "--model: folder" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(checkpoints["target"]),
                "--data",
                str(tmp_path / "nodata"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no results in results.jsonl" in capsys.readouterr().err


def test_stop_on_metric_ends_unlearning_early(tmp_path, checkpoints, muse_dir) -> None:
    stop = "{metric: knowmem_forget, below: 1000, every_n_steps: 2}"
    stop = f"method=[{{name: ga, targets: [natural], stop: {stop}}}]"
    out = run(load_recipe(recipe_file(tmp_path, checkpoints, muse_dir), [stop, "train.max_steps=6"]))
    log = json.loads((out / "models" / "ga@natural.log.json").read_text())
    checks = [entry for entry in log if "eval_knowmem_forget" in entry]
    assert [entry["step"] for entry in checks] == [2]  # the first check is below 1000: stop there
    assert log[-1]["step"] == 2


def test_run_folder_of_another_experiment_is_refused(tmp_path, checkpoints, muse_dir) -> None:
    path = recipe_file(tmp_path, checkpoints, muse_dir)
    ga = "method=[{name: ga, targets: [natural]}]"
    run(load_recipe(path, [ga, "train.max_steps=1", "evaluate=[verbmem]"]))
    with pytest.raises(UserError, match=r"holds a run of a recipe with other train; choose another"):
        run(load_recipe(path, [ga, "evaluate=[verbmem]"]))
    with pytest.raises(UserError, match=r"holds a run of a recipe with other method"):
        run(load_recipe(path, ["method=[{name: npo, targets: [natural]}]", "train.max_steps=1"]))
    # more metrics only add cells
    out = run(load_recipe(path, [ga, "train.max_steps=1"]))
    assert {r["metric"] for r in ResultsFile(out / "results.jsonl")} == set(METRICS)


def test_an_old_run_folder_is_the_same_run_of_its_recipe(tmp_path, checkpoints, muse_dir) -> None:
    """The recipe.yaml an older version stored (no model.name, `targets: [grid]`) is the same run as
    its recipe re-run today, so the run resumes; a model.name given now is another experiment."""
    recipe = yaml.safe_load(recipe_file(tmp_path, checkpoints, muse_dir).read_text())
    folder = RunFolder(old_run_folder(tmp_path / "run", recipe))
    check_run_folder(validate_recipe(recipe), folder)
    renamed = validate_recipe({**recipe, "model": {**recipe["model"], "name": "released"}})
    with pytest.raises(UserError, match="holds a run of a recipe with other model;"):
        check_run_folder(renamed, folder)


def test_robust_methods_and_lora_run_end_to_end(tmp_path, checkpoints, muse_dir) -> None:
    methods = (
        "method=[{name: ga_gdr, sure: {percentile: 90}, learning_rate: 1.0e-2},"
        " {name: ga_gdr, quail: {quantizer: rtn-w4-g32}}, {name: oeu, targets: [natural]}]"
    )
    out = run(
        load_recipe(recipe_file(tmp_path, checkpoints, muse_dir), [methods, "evaluate=[knowmem_forget]"])
    )
    sure = json.loads((out / "models" / "ga_gdr+sure@grid-aligned.method.json").read_text())
    assert sure["learning_rate"] == 1e-2 and 0 < sure["sure"]["param_share"] < 0.5
    assert sure["sure"]["count"] == len(sure["sure"]["modules"]) > 0
    quail = json.loads((out / "models" / "ga_gdr+quail@natural.method.json").read_text())
    assert quail["hinge_margin"] > 0  # 'auto': half the target's mean 4-bit step
    # every term as it trained, weight and parameters: the model card reads these
    assert quail["terms"]["hinge"] == {
        "weight": 1.0, "params": {"margin": quail["hinge_margin"], "distance": "mean_abs"}
    }  # fmt: skip
    assert quail["terms"]["ga"] == {"weight": 1.0, "params": {}} and quail["terms"]["gdr"]["weight"] == 1.0
    assert json.loads((out / "models" / "oeu@natural.method.json").read_text())["projection"] == "layer"
    models = {r["model"] for r in ResultsFile(out / "results.jsonl")}
    assert {"ga_gdr+sure", "ga_gdr+quail", "oeu"} <= models

    lora_dir = tmp_path / "lora"
    lora_dir.mkdir()
    lora = run(
        load_recipe(
            recipe_file(lora_dir, checkpoints, muse_dir),
            [
                "method=[{name: npo_klr, targets: [natural]}]",
                "model.lora={r: 4, alpha: 8}",
                "evaluate=[knowmem_forget]",
            ],
        )
    )
    merged = lora / "models" / "npo_klr@natural"
    keys = json.loads((merged / "config.json").read_text())
    assert keys["architectures"] == ["LlamaForCausalLM"]  # the adapter is merged: a plain model
    from safetensors import safe_open

    with safe_open(merged / "model.safetensors", "pt") as f:
        names = list(f.keys())
        assert not any("lora" in n for n in names)
        target = safe_open(checkpoints["target"] / "model.safetensors", "pt")
        changed = [n for n in names if not (f.get_tensor(n) == target.get_tensor(n)).all()]
    assert changed and all(
        n.endswith(
            (
                "q_proj.weight",
                "k_proj.weight",
                "v_proj.weight",
                "o_proj.weight",
                "gate_proj.weight",
                "up_proj.weight",
                "down_proj.weight",
            )
        )
        for n in changed
    )


def test_device_map_under_several_processes_is_one_line_before_anything_is_written(
    tmp_path, checkpoints, muse_dir, monkeypatch
) -> None:
    recipe = load_recipe(recipe_file(tmp_path, checkpoints, muse_dir), ["device_map=auto"])
    state = SimpleNamespace(num_processes=2, is_main_process=True)
    monkeypatch.setattr("llm_unlearn.pipeline._launch_state", lambda recipe: state)
    with pytest.raises(
        UserError, match=r"^device_map: auto spreads one model over every GPU, but 2 processes"
    ):
        run(recipe)
    assert not recipe.output.dir.exists()


def test_quail_quantizer_is_checked_only_where_it_sets_the_margin(tmp_path, tok) -> None:
    from llm_unlearn.pipeline import check_target_fits
    from llm_unlearn.recipe import validate_recipe

    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "t")  # hidden size 32

    def recipe(margin: object) -> object:
        quail = {"quantizer": "rtn-w4-g64", "margin": margin}
        return validate_recipe({"name": "q", "model": {"target": str(target)}, "data": {"source": "demo"},
                                "method": {"name": "ga_gdr", "quail": quail}, "evaluate": ["privleak"],
                                "output": {"dir": str(tmp_path / "out")}})  # fmt: skip

    with pytest.raises(UserError, match=r"^method\.0\.quail\.quantizer: rtn-w4-g64 cannot quantize"):
        check_target_fits(recipe("auto"), target, tok)
    check_target_fits(recipe(1.0), target, tok)  # a given margin: rtn-w4-g64 is never applied


def test_a_short_context_model_unlearns_relearns_and_audits_with_longer_windows(tmp_path, tok) -> None:
    """data.max_length above the model's context: the training and relearning windows are cut to it;
    a context with no room for VerbMem's 128 new tokens is refused before training."""
    target = save_checkpoint(tiny_llama(tok, max_position_embeddings=160), tok, tmp_path / "short")
    muse = demo_bench_subset(tmp_path / "muse", {"raw": 3, "verbmem": 2, "knowmem": 2, "privleak": 3})
    recipe = {
        "name": "short",
        "model": {"target": str(target)},
        "data": {"source": str(muse), "max_length": 256},
        "method": {"name": "ga_gdr"},
        "train": {"max_steps": 1, "per_device_train_batch_size": 2},
        "quantize": ["rtn-w4-g32"],
        "evaluate": ["verbmem", "privleak"],
        "relearn": {"split": "forget", "samples": 2, "steps": 1},
        "output": {"dir": str(tmp_path / "run")},
    }
    out = run(validate_recipe(recipe))
    records = list(ResultsFile(out / "results.jsonl"))
    assert {r["quantizer"] for r in records} == {"fp", "rtn-w4-g32", "relearn-forget-1"}
    assert all(r["cut_inputs"] > 0 for r in records)  # prompts + 128 new tokens, passages: over 160
    recipe["model"]["target"] = str(
        save_checkpoint(tiny_llama(tok, max_position_embeddings=100), tok, tmp_path / "shorter")
    )
    recipe["output"]["dir"] = str(tmp_path / "run2")
    with pytest.raises(
        UserError, match="evaluate: verbmem: the model's context is 100 tokens, but it needs 128"
    ):
        run(validate_recipe(recipe))
    assert not (tmp_path / "run2").exists()  # refused before anything was trained or written


def test_each_calibration_source_in_use_gets_its_own_windows(tmp_path, checkpoints, muse_dir, tok) -> None:
    path = recipe_file(tmp_path, checkpoints, muse_dir)
    overrides = [
        "quantize=[gptq-w4-g32, awq-w4-g32@forget, rtn-w4-g32]",
        "calibration.samples=3",
        "calibration.seq_len=16",
    ]
    recipe = load_recipe(path, overrides)
    corpus = load_corpus(recipe)
    found = _calibrations(recipe, corpus, tok)
    # the section's generic text for the plain name, the forget split for @forget; both sampled alike
    forget = build_calibration(corpus.get("raw", "forget"), tok, "forget", samples=3, seq_len=16, seed=0)
    generic = build_calibration([GENERIC_TEXT.read_text()], tok, "generic", samples=3, seq_len=16, seed=0)
    assert {source: c.record() for source, c in found.items()} == {
        "forget": forget.record(),
        "generic": generic.record(),
    }
    assert _calibrations(load_recipe(path), corpus, tok) == {}  # no calibrated quantizer: no text read
