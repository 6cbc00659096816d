"""Metrics: MUSE's VerbMem, KnowMem and PrivLeak, TOFU's, WMDP's, lm-eval's, found by name in METRICS.

Importing this package registers every metric module and the in-context columns
(`metrics/incontext.py`), which change what the metrics ask.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from llm_unlearn.metrics import (  # noqa: F401  (registers the metrics and the in-context columns)
    em,
    es,
    harness,
    incontext,
    knowmem,
    privleak,
    privleak_gradnorm,
    privleak_reference,
    tofu,
    verbmem,
    wmdp,
)
from llm_unlearn.metrics.registry import (
    METRICS,
    EvalContext,
    Metric,
    MetricResult,
    ReferenceFlag,
    RetrainReference,
    benchmark_defaults,
    benchmark_metrics,
    examples,
    metric_ci,
    reference_flags,
    register_metric,
)

__all__ = [
    "METRICS",
    "EvalContext",
    "Metric",
    "MetricResult",
    "ReferenceFlag",
    "RetrainReference",
    "benchmark_defaults",
    "benchmark_metrics",
    "evaluate",
    "examples",
    "metric_ci",
    "reference_flags",
    "register_metric",
    "required_splits",
]


def required_splits(names: Iterable[str]) -> dict[str, set[str]]:
    """The union of the named metrics' `requires`: {config: {split, ...}}, so a run loads only those."""
    out: dict[str, set[str]] = {}
    for name in names:
        for config, splits in METRICS.get(name).requires.items():
            out.setdefault(config, set()).update(splits)
    return out


def evaluate(model: nn.Module, ctx: EvalContext, names: list[str]) -> dict[str, MetricResult]:
    """Run the named metrics in order; {name: result}, each with `ci`: the [low, high] 95 % bootstrap
    interval of its agg_value (`metrics/bootstrap.py`, as the metric resamples its examples; None
    without per-example values). Unknown names fail before any model call."""
    metrics = [METRICS.get(name) for name in names]
    results = {m.name: m.fn(model, ctx) for m in metrics}
    for name, result in results.items():
        result["ci"] = metric_ci(result, metric=name)
    return results
