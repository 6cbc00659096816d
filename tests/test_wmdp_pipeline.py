"""WMDP through the pipeline: RMU on a WMDP-layout folder's forget corpus, wmdp_bio and mmlu audited
under a quantizer with their intervals and a verdict, and the shipped WMDP recipes validated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import tiny_llama

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.cli import main
from llm_unlearn.data.wmdp import DEMO_WMDP_DIR
from llm_unlearn.models import save_checkpoint
from llm_unlearn.pipeline import run
from llm_unlearn.recipe import load_recipe, validate_recipe
from llm_unlearn.runfolder import RunFolder, read_json

RECIPES = Path(__file__).parent.parent / "llm_unlearn" / "recipes"


def _demo_subset(root: Path, questions: int, texts: int) -> Path:
    """The first questions and corpus texts of the shipped demo_wmdp, as a WMDP folder."""
    for path in DEMO_WMDP_DIR.rglob("*.json*"):
        dest = root / path.relative_to(DEMO_WMDP_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".jsonl":
            dest.write_text("".join(path.read_text().splitlines(keepends=True)[:texts]))
        else:
            dest.write_text(json.dumps(json.loads(path.read_text())[:questions]))
    return root


def test_rmu_on_a_wmdp_folder_is_audited_with_intervals_and_verdicts(tmp_path: Path, tok) -> None:
    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "target")
    recipe = validate_recipe(
        {
            "name": "wmdp",
            "model": {"target": str(target)},
            "data": {
                "source": str(_demo_subset(tmp_path / "data", questions=6, texts=4)),
                "forget_split": "bio-forget-corpus",
                "retain_split": "bio-retain-corpus",
                "max_length": 64,
            },
            "method": {"name": "rmu", "layer": 1, "steering_coeff": 5.0, "learning_rate": 1e-2},
            "train": {"max_steps": 2, "per_device_train_batch_size": 2},
            "quantize": ["rtn-w4-g32"],
            "evaluate": ["wmdp_bio", "mmlu_continuation"],
            "output": {"dir": str(tmp_path / "run")},
        }
    )
    out = run(recipe)
    results = ResultsFile(RunFolder(out).results)
    for quantizer in ("fp", "rtn-w4-g32"):
        for metric in ("wmdp_bio", "mmlu_continuation"):
            cell = results.get("rmu", "natural", quantizer, metric)
            assert len(cell["value_by_index"]) == 6
            assert math.isfinite(cell["agg_value"]) and 0 <= cell["agg_value"] <= 1
            lo, hi = cell["ci"]
            assert lo <= cell["agg_value"] <= hi, (quantizer, metric)
    cells = read_json(RunFolder(out).verdict)["cells"]
    assert {c["metric"] for c in cells} == {"wmdp_bio"}


def test_the_wmdp_recipes_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(RECIPES / "rmu_wmdp.yaml")]) == 0
    checked = capsys.readouterr().out
    assert "target: HuggingFaceH4/zephyr-7b-beta" in checked and "steering_coeff: 6.5" in checked
    demo = load_recipe(RECIPES / "demo_wmdp.yaml")
    assert demo.data.kind == "wmdp" and demo.quantize[:2] == ("fp", "rtn-w4-g32") and demo.relearn
    assert demo.evaluate == ("wmdp_bio_continuation", "mmlu_continuation") and demo.method[0].name == "rmu"
