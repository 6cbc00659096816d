"""TOFU through the pipeline: answer-only unlearning, the TOFU metrics under quantizers with their
intervals, forget quality referenced to the retrain model, verdicts, in-context probing, and
`evaluate` on a TOFU folder."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_llama

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.cli import main
from llm_unlearn.data.collate import pad_batch
from llm_unlearn.data.tofu import DEMO_TOFU, TOFU, load_tofu, training_windows
from llm_unlearn.metrics import METRICS as REGISTERED
from llm_unlearn.models import save_checkpoint
from llm_unlearn.pipeline import run
from llm_unlearn.recipe import RecipeError, validate_recipe
from llm_unlearn.runfolder import RunFolder, read_json

METRICS = ["tofu_forget_quality", "tofu_model_utility", "tofu_prob", "tofu_truth_ratio"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("tofu")
    return {
        name: save_checkpoint(tiny_llama(tok, seed=seed), tok, root / name)
        for name, seed in (("t", 0), ("r", 1))
    }


def test_a_tofu_recipe_unlearns_and_audits_with_intervals_and_verdicts(tmp_path, checkpoints) -> None:
    recipe = validate_recipe(
        {
            "name": "tofu",
            "model": {"target": str(checkpoints["t"]), "retrain": str(checkpoints["r"])},
            "data": {"source": "demo_tofu", "forget_split": "forget01", "max_length": 96},
            "method": {"name": "npo_gdr"},
            "train": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-2},
            "quantize": ["rtn-w4-g32"],
            "evaluate": METRICS,
            "relearn": {"split": "forget", "samples": 2, "steps": 1},
            "output": {"dir": str(tmp_path / "run")},
        }
    )
    assert recipe.data.retain_split == "retain99"
    out = run(recipe)
    results = ResultsFile(RunFolder(out).results)
    # the retrain model at full precision is forget quality's reference: p = 1 against itself
    assert results.get("retrain", "-", "fp", "tofu_forget_quality")["agg_value"] == 1.0
    for quantizer in ("fp", "rtn-w4-g32", "relearn-forget-1"):
        for metric in METRICS:
            cell = results.get("npo_gdr", "natural", quantizer, metric)
            if quantizer.startswith("relearn") and not REGISTERED.get(metric).forget:
                assert cell is None, metric  # under attack, the forget metrics alone
                continue
            assert math.isfinite(cell["agg_value"]), (quantizer, metric)
            lo, hi = cell["ci"]
            assert lo <= cell["agg_value"] + 1e-9 and cell["agg_value"] <= hi + 1e-9, (quantizer, metric)
        quality = results.get("npo_gdr", "natural", quantizer, "tofu_forget_quality")
        assert quality["reference"] == "retain" and len(quality["reference_truth_ratios"]) == 6
    cells = read_json(RunFolder(out).verdict)["cells"]
    assert {c["metric"] for c in cells} == {"tofu_forget_quality", "tofu_prob", "tofu_truth_ratio"}
    assert "tofu_model_utility" in RunFolder(out).report_md.read_text()


def test_an_in_context_column_has_cells_for_the_tofu_metrics_that_take_shots(tmp_path, tok) -> None:
    """A target that learned forget01 (40 Adam steps on its answers), a retrain model that never saw
    it, GA: `incontext-forget-2` has cells for the metrics that take shots (not forget quality), and
    a recovery ratio, (M(u | shots) − M(u)) / (M(t) − M(u)), in the verdict."""
    target = tiny_llama(tok, seed=0)
    corpus = load_tofu(DEMO_TOFU, {TOFU: ["forget"]}, "forget01")
    batch = pad_batch(training_windows(corpus, "forget", tok), tok.pad_token_id)
    optimizer = torch.optim.Adam(target.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        target(**batch).loss.backward()
        optimizer.step()
    models = tmp_path / "models"
    recipe = validate_recipe(
        {
            "name": "tofu",
            "model": {
                "target": str(save_checkpoint(target, tok, models / "t")),
                "retrain": str(save_checkpoint(tiny_llama(tok, seed=1), tok, models / "r")),
            },
            "data": {"source": "demo_tofu", "forget_split": "forget01", "max_length": 96},
            "method": {"name": "ga"},
            "train": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-2},
            "quantize": ["fp", "incontext-forget-2"],
            "evaluate": ["tofu_forget_quality", "tofu_prob", "tofu_truth_ratio"],
            "output": {"dir": str(tmp_path / "run")},
        }
    )
    out = run(recipe)
    lines = {(r["model"], r["quantizer"], r["metric"]): r for r in ResultsFile(RunFolder(out).results)}
    assert {key for key in lines if key[1] == "incontext-forget-2"} == {
        (model, "incontext-forget-2", metric)
        for model in ("target", "retrain", "ga")
        for metric in ("tofu_prob", "tofu_truth_ratio")
    }
    assert lines[("ga", "incontext-forget-2", "tofu_prob")]["quantizer_config"]["method"] == "incontext"
    cells = {(c["quantizer"], c["metric"]): c for c in read_json(RunFolder(out).verdict)["cells"]}
    cell = cells[("incontext-forget-2", "tofu_prob")]
    known, forgot, shots = (
        lines[key]["agg_value"]
        for key in (
            ("target", "fp", "tofu_prob"),
            ("ga", "fp", "tofu_prob"),
            ("ga", "incontext-forget-2", "tofu_prob"),
        )
    )
    assert known > forgot + 0.01  # the target knew the forget set, GA forgot it
    assert cell["route"] == "attack" and cell["recovery"] == pytest.approx(
        100 * (shots - forgot) / (known - forgot)
    )


def test_evaluate_reads_a_tofu_folder_and_a_saved_reference(tmp_path, checkpoints, capsys) -> None:
    out = tmp_path / "retrain.json"
    command = [
        "evaluate",
        "--model",
        str(checkpoints["r"]),
        "--data",
        "demo_tofu",
        "--forget-split",
        "forget01",
    ]
    assert main([*command, "--metrics", "tofu_truth_ratio,tofu_forget_quality", "--out", str(out)]) == 0
    assert math.isnan(json.loads(out.read_text())["tofu_forget_quality"]["agg_value"])  # no reference given
    again = tmp_path / "again.json"
    command += ["--metrics", "tofu_forget_quality", "--reference-truth-ratios", str(out), "--out", str(again)]
    # the reference file holds the retrain model's own truth ratios: the same model scores p = 1
    saved = json.loads(out.read_text())
    out.write_text(json.dumps(saved["tofu_truth_ratio"]))
    assert main(command) == 0
    assert json.loads(again.read_text())["tofu_forget_quality"]["agg_value"] == 1.0
    assert "tofu_forget_quality: 1.00" in capsys.readouterr().out


def test_metrics_must_fit_the_benchmark(checkpoints) -> None:
    base = {"name": "x", "model": {"target": "demo_tofu"}, "method": {"name": "ga"}, "output": {"dir": "x"}}
    with pytest.raises(RecipeError, match="evaluate: verbmem reads MUSE data but data.source is a TOFU"):
        validate_recipe({**base, "data": {"source": "demo_tofu"}, "evaluate": ["verbmem"]})
    with pytest.raises(RecipeError, match="evaluate: tofu_prob reads TOFU data but data.source is a MUSE"):
        validate_recipe({**base, "data": {"source": "demo"}, "evaluate": ["tofu_prob"]})
    with pytest.raises(RecipeError, match="retain_split 'retain90' does not pair with forget05"):
        validate_recipe(
            {**base, "data": {"source": "demo_tofu", "forget_split": "forget05", "retain_split": "retain90"}}
        )
