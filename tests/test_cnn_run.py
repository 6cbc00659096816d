"""cnn/run.py: the CLI runs a shrunk demo and writes the AG table; the original checkpoint serves every
forget ratio, the retrain model does not."""

from __future__ import annotations

import json

import torch
from accelerate import Accelerator
from helpers import ROOT, _demo_data

from llm_unlearn.cli import main
from llm_unlearn.cnn.loop import (
    fit,
)
from llm_unlearn.cnn.methods import (
    METHODS,
)
from llm_unlearn.cnn.recipe import validate_cnn_recipe
from llm_unlearn.cnn.run import load_split, new_model, trained_from_scratch


def test_cli_runs_a_shrunk_demo_and_writes_the_ag_table(tmp_path, capsys):
    shrink = ["model.width=2", "original.epochs=1", "retrain.epochs=1", f"output.dir={tmp_path}"]
    shrink += [f"methods.{i}.epochs=1" for i in range(len(_demo_data()["methods"]))]
    assert (
        main(["cnn", str(ROOT / "recipes" / "cnn_demo.yaml"), *(a for s in shrink for a in ("--set", s))])
        == 0
    )
    assert str(tmp_path / "ag_table.md") in capsys.readouterr().out
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    names = [r["method"] for r in rows]
    assert names[:2] == ["original", "retrain"] and {"qmul", "oeu", "oeu+global"} <= set(names)
    assert rows[1]["AG"] == 0.0 and all(0 <= r[k] <= 100 for r in rows for k in ("FA", "RA", "TA", "MIA"))
    assert (tmp_path / "checkpoints" / "qmul.safetensors").is_file()
    assert len(next(r for r in rows if r["method"] == "qmul")["agr_weights"]) == 1  # once per epoch
    table = (tmp_path / "ag_table.md").read_text()
    assert all(f"| {n} |" in table for n in names)


def test_original_checkpoint_serves_every_forget_ratio_and_retrain_does_not(tmp_path):
    data = _demo_data()
    data["data"] |= {"max_train": 60, "max_test": 30}
    data["model"]["width"] = 2
    data["original"] = data["retrain"] = {"epochs": 1, "lr": 0.05, "batch_size": 32}
    recipes = [validate_cnn_recipe({**data, "data": {**data["data"], "forget_ratio": r}}) for r in (0.1, 0.3)]
    accel = Accelerator(cpu=True)
    timing = {}
    for i, recipe in enumerate(recipes):
        split = load_split(recipe)
        for role in ("original", "retrain"):
            model, timing[role, i] = trained_from_scratch(recipe, split, role, accel, tmp_path)
            if role == "original" and i == 1:
                shared = model
    assert timing["original", 1]["cached"] and not timing["retrain", 1]["cached"]
    fresh = METHODS.get("original")(10, 0)
    again = fit(new_model(recipes[1], load_split(recipes[1])), fresh, load_split(recipes[1]),
                recipes[1].settings(recipes[1].original), accel)  # fmt: skip
    for p, q in zip(shared.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q)  # training the original never reads the forget set
