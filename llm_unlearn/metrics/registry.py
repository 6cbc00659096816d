"""The metric registry and the context every metric reads.

A metric is a function `(model, ctx) -> {"agg_value": float, "value_by_index": {...}, ...}`:
the summary for tables and each example's value so a report can show the worst cases.
Metrics read models and data; they never change a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.registry import Registry

MetricResult = dict[str, Any]
MetricFn = Callable[[nn.Module, "EvalContext"], MetricResult]


@dataclass
class EvalContext:
    tokenizer: PreTrainedTokenizerBase
    corpus: MuseCorpus
    batch_size: int = 16
    #: membership AUC of the retrain model (PrivLeak's reference); None -> 0.5, an ideal
    #: non-member guess, used when no retrain model is given (recorded in the result)
    privleak_reference_auc: float | None = None
    #: cap on examples per metric (None = all); for smoke runs, never for reported numbers
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    #: the MUSE configs and splits the metric reads: {"knowmem": ("forget_qa", "forget_qa_icl")}
    requires: Mapping[str, tuple[str, ...]]
    #: a forget metric (lower once forgotten, or PrivLeak): its recoveries get a release verdict
    forget: bool = False
    #: tokens the metric generates after each prompt (0: it only scores), so a run can refuse a
    #: model whose context has no room for them before it trains anything
    new_tokens: int = 0
    #: one point of the metric's scale (1 for MUSE's ×100 scores, 0.01 for values in [0, 1]): a
    #: model has not been shown to forget (or a target to know) by a move of less
    point: float = 1.0
    #: a forget metric falls as the model forgets (VerbMem, KnowMem); False: it rises (PrivLeak,
    #: from the target's −100 toward the retrain model's 0; TOFU's truth ratio and forget quality)
    lower_forgets: bool = True
    #: the value of a model that knows nothing of the forget set (ROUGE 0, PrivLeak 0): without a
    #: retrain model, a target within a point of it has nothing to forget; None: no such value
    floor: float | None = None


METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str,
    requires: Mapping[str, tuple[str, ...]],
    forget: bool = False,
    new_tokens: int = 0,
    point: float = 1.0,
    lower_forgets: bool = True,
    floor: float | None = None,
) -> Callable[[MetricFn], MetricFn]:
    def add(fn: MetricFn) -> MetricFn:
        metric = Metric(name, fn, dict(requires), forget, new_tokens, point, lower_forgets, floor)
        METRICS.register(name)(metric)
        return fn

    return add
