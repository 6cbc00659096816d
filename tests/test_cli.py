"""cli.py: `evaluate` takes each metric's retrain reference by hand through the flag its
`RetrainReference` declares (metrics/), and hands the value to the metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_llama

from llm_unlearn.cli import _parser, main
from llm_unlearn.metrics import METRICS
from llm_unlearn.metrics.privleak import privleak_value
from llm_unlearn.models import save_checkpoint

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
