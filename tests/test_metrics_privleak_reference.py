"""PrivLeak by a reference model (metrics/privleak_reference.py) against open-unlearning's
ReferenceAttack computed by hand: target loss − reference loss per passage, the reference being the
retrain model, handed over as the audit does (its full-precision result, through a results file)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import demo_bench_subset, tiny_llama
from sklearn.metrics import roc_auc_score

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.cli import main
from llm_unlearn.data.corpora import MuseCorpus, load_muse
from llm_unlearn.metrics import METRICS, EvalContext, evaluate
from llm_unlearn.models import save_checkpoint
from llm_unlearn.runfolder import RunFolder

FORGET = ["the cat sat on the mat", "abc abc abc"]
HOLDOUT = ["a dog ran far away today", "xyz", "hello there"]
NAME = "privleak_reference"


def loss(model: torch.nn.Module, tok, text: str) -> float:
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        logp = model(input_ids=ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])
    return -logp.mean().item()


def test_reference_attack_equals_the_hand_computation(llama, tok) -> None:
    retrain = tiny_llama(tok, seed=1).eval()
    ctx = EvalContext(tok, MuseCorpus("t", {"privleak": {"forget": FORGET, "holdout": HOLDOUT}}))
    reference = METRICS.get(NAME).reference

    # the retrain model's own cell: no reference yet, then its own (every score 0, AUC 0.5)
    own = evaluate(retrain, reference.given(ctx, None), [NAME])[NAME]
    assert own["reference"] is None and own["ci"] is None and math.isnan(own["agg_value"])
    reference.own(own)
    assert (own["agg_value"], own["auc"], own["reference_auc"], own["reference"]) == (
        0.0,
        0.5,
        0.5,
        "retrain",
    )
    assert {v["score"] for v in own["value_by_index"].values()} == {0.0}

    stored = json.loads(json.dumps(own))  # as results.jsonl keeps it
    result = evaluate(llama, reference.given(ctx, reference.take(stored)), [NAME])[NAME]
    texts = [*FORGET, *HOLDOUT]
    scores = [loss(llama, tok, t) - loss(retrain, tok, t) for t in texts]
    assert [v["score"] for v in result["value_by_index"].values()] == pytest.approx(scores, abs=1e-5)
    theirs = roc_auc_score([0, 0, 1, 1, 1], scores)  # their labels: forget 0, holdout 1
    assert result["auc"] == pytest.approx(1 - theirs)
    assert result["agg_value"] == pytest.approx((1 - theirs - 0.5) / 0.5 * 100)
    assert (result["reference"], result["reference_auc"], result["mia_score"]) == (
        "retrain",
        0.5,
        "reference",
    )
    assert result["ci"][0] <= result["agg_value"] <= result["ci"][1]


def test_reference_attack_is_a_privleak_metric() -> None:
    m = METRICS.get(NAME)
    assert (m.role, m.benchmark, m.requires) == ("forget", "muse", {"privleak": ("forget", "holdout")})
    assert (m.lower_forgets, m.floor, m.default_rank, m.transformers_only) == (False, 0.0, None, False)


def test_the_audit_hands_the_retrain_models_losses_to_every_cell(tmp_path, tok) -> None:
    """`llm-unlearn audit --retrain`: the retrain model's fp cell is its own reference (PrivLeak 0),
    and another model's cell equals this metric given the retrain model's losses by hand."""
    folder = demo_bench_subset(tmp_path / "muse", {"raw": 2, "verbmem": 1, "knowmem": 1, "privleak": 3})
    target, retrain = tiny_llama(tok), tiny_llama(tok, seed=1)
    paths = {n: save_checkpoint(m, tok, tmp_path / n) for n, m in [("target", target), ("retrain", retrain)]}
    args = ["audit", "--target", str(paths["target"]), "--retrain", str(paths["retrain"])]
    args += [
        "--model",
        f"u={paths['target']}",
        "--data",
        str(folder),
        "--quantize",
        "fp",
        "--relearn",
        "none",
    ]
    assert main([*args, "--metrics", NAME, "--out", str(tmp_path / "run")]) == 0
    cells = {r["model"]: r for r in ResultsFile(RunFolder(tmp_path / "run").results)}
    assert (cells["retrain"]["agg_value"], cells["retrain"]["reference"]) == (0.0, "retrain")
    corpus = load_muse(str(folder), {"privleak": ("forget", "holdout")})
    texts = [*corpus.get("privleak", "forget"), *corpus.get("privleak", "holdout")]
    scores = [loss(target, tok, t) - loss(retrain, tok, t) for t in texts]
    assert [v["score"] for v in cells["u"]["value_by_index"].values()] == pytest.approx(scores, abs=1e-5)
    assert (cells["u"]["reference"], cells["u"]["reference_auc"]) == ("retrain", 0.5)
