"""eval/cnn_benchmark.py: its learning-rate grid and its paired orderings."""

from __future__ import annotations

import pytest
from helpers import ROOT

from llm_unlearn.cnn.metrics import t_interval


def _benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("cnn_benchmark", ROOT / "eval" / "cnn_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_grid_and_paired_orderings():
    bench = _benchmark_module()
    assert bench.lr_grid("ft") == [0.00333, 0.01, 0.03] and bench.lr_grid("ga") == [1e-4, 1e-3, 1e-2]
    assert bench.lr_grid("salun") == [0.00433, 0.013, 0.039]
    rows = {
        "qmul": [{"AG": a} for a in (1.0, 2.0, 3.0)],
        "ft": [{"AG": a} for a in (3.0, 4.0, 5.5)],  # qmul − ft = −2, −2, −2.5
        "ga": [{"AG": a} for a in (9.0, 9.0, 9.0)],
    }
    out = bench.paired(rows, "qmul", ("ft", "ga"))
    assert out["b"] == "ft" and out["verdict"] == "holds"
    assert out["diff"] == pytest.approx(list(t_interval([-2.0, -2.0, -2.5])))
    assert bench.paired(rows, "ga", "qmul")["verdict"] == "reversed"
