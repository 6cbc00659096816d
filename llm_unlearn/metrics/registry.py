"""The metric registry and the context every metric reads.

A metric is a function `(model, ctx) -> {"agg_value": float, "value_by_index": {...}, ...}`:
the summary for tables and each example's value so a report can show the worst cases.
Metrics read models and data; they never change a model.

A registered `Metric` carries everything the rest of the package asks about it (its title, role,
benchmark, bootstrap, retrain reference and scale), so the audit, the reports, the Hub card, the
recipe and the CLI name no metric: they ask this registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics.bootstrap import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    Builder,
    Examples,
    collect,
    interval,
    mean_examples,
)
from llm_unlearn.metrics.shots import Shots
from llm_unlearn.registry import Registry

MetricResult = dict[str, Any]
MetricFn = Callable[[nn.Module, "EvalContext"], MetricResult]
#: forget: its recoveries get a release verdict; retain: utility on the retain set (MUSE's M4);
#: utility: general utility (TOFU's model utility, lm-eval)
Role = Literal["forget", "retain", "utility"]


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
    #: in-context shots from the forget set in place of the benchmark's own few-shot examples, for
    #: the metrics that take them (`Metric.incontext`); None: the benchmark's own
    shots: Shots | None = None


@dataclass(frozen=True)
class ReferenceFlag:
    """The `llm-unlearn evaluate` flag that gives a reference by hand, where no retrain model is
    evaluated beside the model (`--reference-auc`), so the CLI adds and applies it by asking."""

    #: the flag as the user types it, e.g. "--reference-auc"
    name: str
    help: str
    #: the flag's text as the parser checks it (a ValueError's message is the usage error)
    parse: Callable[[str], Any]
    #: the parsed value as the reference's `given` takes it, read when the command runs (a file
    #: that cannot be read: a UserError); the parsed value itself where None
    load: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class RetrainReference:
    """What a metric takes from the retrain model's full-precision result of the same metric (the
    audit evaluates the retrain model first), so that `audit/run.py` asks and never knows which."""

    #: the reference found in the retrain model's result (PrivLeak: its membership AUC; TOFU's
    #: forget quality: its forget-set truth ratios)
    take: Callable[[MetricResult], Any]
    #: the context a cell is evaluated in given that reference (None: no retrain result yet)
    given: Callable[[EvalContext, Any], EvalContext]
    #: the retrain model's own result made its own reference, in place (its PrivLeak 0, its forget
    #: quality 1): for the retrain model's full-precision cell, which has no reference before it
    own: Callable[[MetricResult], None]
    #: how `llm-unlearn evaluate` takes it by hand (None: only from a retrain model)
    flag: ReferenceFlag | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    #: the benchmark configs and splits the metric reads: {"knowmem": ("forget_qa", "forget_qa_icl")},
    #: so a run loads only those
    requires: Mapping[str, tuple[str, ...]]
    #: the benchmark whose data it reads ("muse", "tofu"; None: any, e.g. lm-eval's own tasks), so a
    #: recipe refuses a metric that does not fit its data before it trains anything
    benchmark: str | None = None
    #: forget (lower once forgotten, or PrivLeak: its recoveries get a release verdict), retain or
    #: utility: what a report and the gate do with its cells
    role: Role = "retain"
    #: its place in its benchmark's default `evaluate` list (None: only when a recipe names it), so
    #: the recipe and the CLI default to the benchmark's own metrics without naming them
    default_rank: int | None = None
    #: what reports, the HTML page and the Hub card call it; the name where it has none
    title: str = ""
    #: its scale and direction, shown in brackets after the title ("" for none)
    unit: str = ""
    #: how its result's value_by_index rows become `bootstrap.Examples` (the plain mean of `score`;
    #: PrivLeak's forget/holdout strata with a fixed AUC_ref; a KS test against fixed truth ratios;
    #: TOFU utility's sets), so an interval and a paired recovery resample what its agg_value is of
    bootstrap: Builder = mean_examples
    #: what it takes from the retrain model's result (None: nothing, the value stands alone)
    reference: RetrainReference | None = None
    #: the retain/utility metric drawn against it in the report's forgetting-vs-utility plot (the same
    #: probe on the retain set), None: no such plot
    paired_with: str | None = None
    #: the recipe section holding its settings (lm-eval's tasks), handed over as ctx.extra[settings]:
    #: a recipe that evaluates the metric without that section is refused before anything runs
    settings: str | None = None
    #: it wraps the audited transformers model itself (lm-eval's HFLM), so a cell that llama.cpp's
    #: kernels evaluate cannot run it: such a recipe is refused before anything runs
    transformers_only: bool = False
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
    #: it asks forget QA pairs in a prompt and takes `ctx.shots` in place of its benchmark's own
    #: few-shot examples: an in-context column (`metrics/incontext.py`) has cells for it alone
    incontext: bool = False

    @property
    def forget(self) -> bool:
        """A forget metric: its recoveries get a release verdict."""
        return self.role == "forget"

    @property
    def heading(self) -> str:
        """Title (unit): the line a report heads its table with."""
        title = self.title or self.name
        return f"{title} ({self.unit})" if self.unit else title

    def examples(self, result: Mapping[str, Any]) -> Examples | None:
        """The bootstrap examples of one of its results (`bootstrap.collect`)."""
        return collect(result, self.bootstrap)


METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str, requires: Mapping[str, tuple[str, ...]], **about: Any
) -> Callable[[MetricFn], MetricFn]:
    """Register `fn` as metric `name`; `about` sets any other `Metric` field (role, title, ...)."""

    def add(fn: MetricFn) -> MetricFn:
        METRICS.register(name)(Metric(name, fn, dict(requires), **about))
        return fn

    return add


def metric_of(result: Mapping[str, Any], metric: str | None = None) -> Metric | None:
    """The registered metric named `metric`, else the result's own `metric` (a results line's);
    None for a name no longer registered or a bare result."""
    name = metric if metric is not None else result.get("metric")
    return METRICS.get(name) if name in METRICS else None


def examples(result: Mapping[str, Any], metric: str | None = None) -> Examples | None:
    """The bootstrap examples of `result` as its metric builds them (`metric_of`; the plain mean of
    `score` for an unknown one), None without usable ones."""
    found = metric_of(result, metric)
    return collect(result) if found is None else found.examples(result)


def metric_ci(
    result: Mapping[str, Any],
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
    metric: str | None = None,
) -> list[float] | None:
    """[low, high] percentile-bootstrap interval of `result`'s agg_value from its per-example values
    (as its metric resamples them, `examples`); None without usable per-example values."""
    return interval(examples(result, metric), resamples, confidence, seed)


def reference_flags() -> dict[str, RetrainReference]:
    """The retrain references `llm-unlearn evaluate` takes by hand, by flag (metrics may share one:
    PrivLeak's); `names.json` records their names and help for a parser built without torch."""
    references = (METRICS.get(name).reference for name in METRICS.names())
    return {r.flag.name: r for r in references if r is not None and r.flag is not None}


def benchmark_defaults(benchmark: str) -> tuple[str, ...]:
    """The benchmark's own metrics in their `default_rank` order: a recipe's and the CLI's default."""
    ranked = [
        m
        for m in map(METRICS.get, METRICS.names())
        if m.benchmark == benchmark and m.default_rank is not None
    ]
    return tuple(m.name for m in sorted(ranked, key=lambda m: m.default_rank))


def benchmark_metrics(benchmark: str) -> list[str]:
    """Every metric that reads `benchmark`'s data, for a message that names what would fit."""
    return [name for name in METRICS.names() if METRICS.get(name).benchmark == benchmark]
