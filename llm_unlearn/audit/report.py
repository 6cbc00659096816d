"""report.md, report.html and verdict.json from a run folder's results.jsonl (and diagnostics.jsonl):
the release verdict first, then one table per metric with intervals and recovery ratios, and the
weight diagnostics.

Recovery of a metric M under quantizer q (METHODS.md), for an unlearned model u of target t:

    recovery = (M(q(u)) − M(u)) / (M(t) − M(u))        all but q(u) at full precision

0 % = quantization keeps the forgetting, 100 % = the quantized model is back at the target.
Every other column (a cast, a relearned or pruned model, an in-context probe) takes the place of
q(u) the same way. Columns fall in two routes back (`columns.ROUTES`): *as shipped* (full precision,
formats, casts) and *under attack* (relearning, pruning, adversarial calibration, in-context); each
model's answer is its worst gating cell, overall and per route, and the gate reads the routes
`--fail-on` names. Intervals, the undefined rule and the verdict are
`audit/stats.py`'s; `AuditCells` is the one place that applies them to a run's cells, for every
view (report.md, report.html, verdict.json, the Hub card).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from llm_unlearn.audit import (
    columns,  # noqa: F401  registers every kind of column
    stats,
)
from llm_unlearn.audit.results import Key, cell_key
from llm_unlearn.audit.run import DIAGNOSTICS
from llm_unlearn.columns import ROUTES, is_format, route
from llm_unlearn.metrics import METRICS
from llm_unlearn.recipe import VerdictSection, validate_model
from llm_unlearn.runfolder import GRID_ALIGNED, NO_TARGET

#: how a target label reads in a table: each label is its own, the retrain model's none is a dash
TARGET_LABELS = {NO_TARGET: "–"}
#: worst first: a model not shown to forget, then the recovery bands, then what the gate excludes
VERDICT_ORDER = (stats.NOT_FORGOTTEN, stats.FAILS, stats.PARTLY, stats.HOLDS, stats.NOTHING_TO_FORGET)
#: the verdicts that fail the gate whatever the threshold
FAILS_THE_GATE = (stats.NOT_FORGOTTEN,)
#: marks a recovery whose interval crosses a verdict threshold
CROSSES = "~"
#: how each route reads in reports, and the routes `--fail-on` can name (`any`: both)
ROUTE_TITLES = {"shipped": "as shipped", "attack": "under attack"}
FAIL_ON = (*ROUTES, "any")


def metric_title(metric: str) -> str:
    """The registry's `Metric.heading` (title and unit); the name itself for a name no longer registered."""
    return METRICS.get(metric).heading if metric in METRICS else metric


def metric_point(metric: str) -> float:
    """One point of `metric`'s scale (the registry's `point`; 1 for a name no longer registered)."""
    return METRICS.get(metric).point if metric in METRICS else stats.MIN_FORGOTTEN


def is_forget_metric(metric: str) -> bool:
    """Whether `metric`'s recoveries get a verdict (the registry's `forget` flag)."""
    return metric in METRICS and METRICS.get(metric).forget


def decimals(metric: str) -> int:
    """One decimal for MUSE's ×100 scores, three for values in [0, 1] (TOFU, lm-eval)."""
    return 3 if metric_point(metric) < 1 else 1


def percent(fraction: float) -> str:
    """A fraction as a whole percentage, never `-0%`."""
    text = f"{fraction:.0%}"
    return "0%" if text == "-0%" else text


def number(value: float, metric: str) -> str:
    """A value of `metric` in its own decimals, never `-0.0`."""
    text = f"{value:.{decimals(metric)}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def interval_text(ci: stats.Interval | list[float] | None, metric: str) -> str:
    return f" [{number(ci[0], metric)}, {number(ci[1], metric)}]" if ci else ""


@dataclass(frozen=True)
class Cell:
    """One audit cell as every view shows it: the metric with its interval; for an unlearned model
    under a column, the recovery (fractions) with its interval; for a forget metric also what
    unlearning did at full precision (`forgetting`) and the verdict: the recovery's band where the
    model forgot, else the state that leaves the recovery blank."""

    model: str
    target: str
    quantizer: str
    metric: str
    value: float
    ci: list[float] | None
    recovery: stats.Recovery | None = None
    forgetting: stats.Forgetting | None = None
    verdict: str | None = None
    crosses_boundary: bool = False
    gates: bool = False
    route: str = "shipped"

    @property
    def has_recovery(self) -> bool:
        return self.recovery is not None and self.recovery.value is not None

    def text(self) -> str:
        """`value [lo, hi]`, then `(r% [lo%, hi%])` where a recovery is shown (`~` if it crosses a
        threshold), or `(not forgotten)` / `(nothing to forget)` where the state leaves it blank."""
        out = number(self.value, self.metric) + interval_text(self.ci, self.metric)
        if self.has_recovery:
            out += f" ({self.recovery_text()})"
        elif self.forgetting is not None and self.forgetting.state != stats.FORGOTTEN:
            out += f" ({self.forgetting.state})"
        return out

    def recovery_text(self) -> str:
        r = self.recovery
        ci = f" [{percent(r.ci[0])}, {percent(r.ci[1])}]" if r.ci else ""
        return f"{percent(r.value)}{ci}{CROSSES if self.crosses_boundary else ''}"

    def why(self) -> str:
        """One line: why this verdict (the amounts behind it, each with its interval)."""
        f, m = self.forgetting, self.metric
        if f is None:
            return ""
        moved = f"{number(f.forgotten.value, m)}{interval_text(f.forgotten.ci, m)}"
        if f.state == stats.NOTHING_TO_FORGET:
            known = f"{number(f.known.value, m)}{interval_text(f.known.ci, m)}"
            beyond = "retrain" if f.reference == "retrain" else "floor"
            return f"{m}: target − {beyond} = {known} toward knowing, not a point clear of 0: nothing to test"
        if f.state == stats.NOT_FORGOTTEN:
            return f"unlearning moved {m} by {moved} at fp: not a point clear of 0"
        return f"{self.quantizer} brings back {self.recovery_text()} of the {moved} {m} forgotten"

    def verdict_entry(self) -> dict[str, Any]:
        """The cell as a line of verdict.json: recovery and its interval in percent, the forgotten
        amount (and what the target knows) in the metric's units."""
        r, f = self.recovery, self.forgetting
        return {
            "model": self.model,
            "target": self.target,
            "quantizer": self.quantizer,
            "metric": self.metric,
            "recovery": 100 * r.value if self.has_recovery else None,
            "recovery_ci": [100 * x for x in r.ci] if self.has_recovery and r.ci else None,
            "verdict": self.verdict,
            "crosses_boundary": self.crosses_boundary,
            "gates": self.gates,
            "route": self.route,
            "forgotten": f.forgotten.value,
            "forgotten_ci": None if f.forgotten.ci is None else list(f.forgotten.ci),
            "known": None if f.known is None else f.known.value,
            "known_ci": None if f.known is None or f.known.ci is None else list(f.known.ci),
            "known_against": f.reference,
            "why": self.why(),
        }


@dataclass(frozen=True)
class ModelVerdict:
    """One unlearned model's answer: its worst gating cell (None when it has none) and that verdict,
    and the worst gating cell of each route (`columns.ROUTES`; None for a route with no column)."""

    model: str
    target: str
    verdict: str
    worst: Cell | None
    routes: dict[str, Cell | None]

    def entry(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "verdict": self.verdict,
            **_worst_entry(self.worst),
            "routes": {r: _route_entry(c) for r, c in self.routes.items()},
        }


def _route_entry(c: Cell | None) -> dict[str, Any] | None:
    return None if c is None else {"verdict": c.verdict, **_worst_entry(c)}


def _worst_entry(w: Cell | None) -> dict[str, Any]:
    return {
        "metric": None if w is None else w.metric,
        "quantizer": None if w is None else w.quantizer,
        "recovery": None if w is None or not w.has_recovery else 100 * w.recovery.value,
        "recovery_ci": [100 * x for x in w.recovery.ci] if w and w.has_recovery and w.recovery.ci else None,
        "why": "" if w is None else w.why(),
    }


def in_route(cell: dict[str, Any] | Cell, routes: str) -> bool:
    """Whether a verdict cell (a Cell or a verdict.json line) counts for `routes` (a route or `any`):
    its column's route, or any route for a model's state at full precision (not forgotten, nothing
    to forget), which no column changes."""
    get = cell.get if isinstance(cell, dict) else lambda key, default=None: getattr(cell, key, default)
    return routes == "any" or get("route", "shipped") == routes or get("verdict") in STATES


#: the verdicts of a model's state before any column: they hold for every route
STATES = (stats.NOT_FORGOTTEN, stats.NOTHING_TO_FORGET)


class AuditCells:
    """A run's cells with intervals, recoveries and verdicts under one set of verdict settings,
    each computed once, on first use."""

    def __init__(self, results: Iterable[dict[str, Any]], settings: VerdictSection | None = None) -> None:
        self.settings = settings or VerdictSection()
        self.records = {cell_key(r): r for r in results if r["metric"] != DIAGNOSTICS}
        self._cells: dict[Key, Cell | None] = {}
        self._forgetting: dict[tuple[str, str, str], stats.Forgetting | None] = {}

    @property
    def _bootstrap(self) -> dict[str, Any]:
        s = self.settings
        return {"resamples": s.resamples, "confidence": s.confidence, "seed": s.seed}

    def gates(self, metric: str) -> bool:
        """Whether `metric` is one the release gate reads (verdict.metrics; default every forget metric)."""
        chosen = self.settings.metrics
        return is_forget_metric(metric) and (chosen is None or metric in chosen)

    def get(self, model: str, target: str, quantizer: str, metric: str) -> Cell | None:
        key = (model, target, quantizer, metric)
        if key not in self._cells:
            self._cells[key] = self._cell(key)
        return self._cells[key]

    def forgetting(self, model: str, target: str, metric: str) -> stats.Forgetting | None:
        """What unlearning did to forget metric `metric` at full precision (None without the cells)."""
        key = (model, target, metric)
        if key not in self._forgetting:
            base = self.records.get(("target", target, "fp", metric))
            fp = self.records.get((model, target, "fp", metric))
            found = None
            if base is not None and fp is not None:
                m = METRICS.get(metric)
                retrain = self.records.get(("retrain", NO_TARGET, "fp", metric))
                found = stats.forgetting(
                    base, fp, retrain, lower_forgets=m.lower_forgets, floor=m.floor, point=m.point,
                    **self._bootstrap,
                )  # fmt: skip
            self._forgetting[key] = found
        return self._forgetting[key]

    def _cell(self, key: Key) -> Cell | None:
        record = self.records.get(key)
        if record is None:
            return None
        model, target, quantizer, metric = key
        s = self.settings
        cell = Cell(
            *key,
            float(record["agg_value"]),
            stats.metric_ci(record, **self._bootstrap),
            route=route(record.get("quantizer_config", {})),
        )
        if not is_unlearned(model):
            return cell
        if not is_forget_metric(metric):
            return cell if quantizer == "fp" else replace(cell, recovery=self._recovery(key, record))
        forgetting = self.forgetting(model, target, metric)
        if forgetting is None:
            return cell
        cell = replace(cell, forgetting=forgetting, gates=self.gates(metric))
        if forgetting.state != stats.FORGOTTEN:
            # the state is the model's at full precision: one verdict row, in the fp column
            return replace(cell, verdict=forgetting.state if quantizer == "fp" else None)
        if quantizer == "fp":
            return cell
        found = self._recovery(key, record)
        return replace(
            cell,
            recovery=found,
            verdict=stats.verdict(found.value, found.ci, s.holds_below, s.fails_from),
            crosses_boundary=stats.crosses_boundary(found.ci, s.holds_below, s.fails_from),
        )

    def _recovery(self, key: Key, record: dict[str, Any]) -> stats.Recovery | None:
        """The recovery of the cell `key` (record `record`) against its model and target at fp."""
        model, target, _, metric = key
        base = self.records.get(("target", target, "fp", metric))
        fp = self.records.get((model, target, "fp", metric))
        if base is None or fp is None:
            return None
        return stats.paired_recovery(base, fp, record, **self._bootstrap, min_forgotten=metric_point(metric))

    def verdict_cells(self, model: str | None = None, target: str | None = None) -> list[Cell]:
        """Every verdict row, optionally of one model and target, worst first (by verdict, then by
        recovery): an unlearned model × column × forget metric where the model forgot, and one row
        (column fp) per model × forget metric where it did not or had nothing to forget."""
        keys = [k for k in self.records if is_unlearned(k[0]) and is_forget_metric(k[3])]
        cells = [self.get(*k) for k in keys if model in (None, k[0]) and target in (None, k[1])]
        return sorted((c for c in cells if c is not None and c.verdict is not None), key=_worst_first)

    def model_verdicts(self, model: str | None = None, target: str | None = None) -> list[ModelVerdict]:
        """One answer per unlearned model (of `model`/`target` if given), worst first: its worst
        gating cell, whose verdict is the model's."""
        worst: dict[tuple[str, str], Cell] = {}
        by_route: dict[tuple[str, str], dict[str, Cell | None]] = {}
        for cell in self.verdict_cells(model, target):
            key = (cell.model, cell.target)
            if not cell.gates:
                continue
            worst.setdefault(key, cell)  # cells come worst first
            routes = by_route.setdefault(key, dict.fromkeys(ROUTES))
            for r in ROUTES:
                if routes[r] is None and in_route(cell, r):
                    routes[r] = cell
        found = [ModelVerdict(*key, cell.verdict, cell, by_route[key]) for key, cell in worst.items()]
        return sorted(found, key=lambda v: (VERDICT_ORDER.index(v.verdict), v.target, v.model))

    def verdict(self) -> dict[str, Any]:
        """verdict.json's content: the settings, each model's answer, the count of each verdict, and
        the cells worst first."""
        cells = self.verdict_cells()
        counts = Counter(c.verdict for c in cells)
        return {
            "settings": self.settings.model_dump(mode="json"),
            "models": [v.entry() for v in self.model_verdicts()],
            "counts": {v: counts.get(v, 0) for v in VERDICT_ORDER},
            "cells": [c.verdict_entry() for c in cells],
        }


def _worst_first(cell: Cell) -> tuple[int, float, str, str, str, str]:
    value = cell.recovery.value if cell.has_recovery else 0.0
    return (
        VERDICT_ORDER.index(cell.verdict),
        -value,
        cell.metric,
        cell.target,
        cell.model,
        cell.quantizer,
    )


def failing_cells(
    verdict: dict[str, Any], fail_above_pct: float, fail_on: str = "any"
) -> list[dict[str, Any]]:
    """The gating cells of verdict.json content `verdict` that fail the release gate, worst first: a
    model not shown to forget, or a point recovery above `fail_above_pct` % in a column of the
    routes `fail_on` names (`shipped`, `attack` or `any`)."""
    return [
        c
        for c in verdict["cells"]
        if c.get("gates", True)
        and in_route(c, fail_on)
        and (c["verdict"] in FAILS_THE_GATE or (c["recovery"] is not None and c["recovery"] > fail_above_pct))
    ]


#: failing cells the terminal lists before it points to verdict.json for the rest
GATE_LINES = 8


def gate_summary(
    verdict: dict[str, Any], fail_above_pct: float | None, where: str, fail_on: str = "any"
) -> tuple[list[str], bool]:
    """The terminal's account of verdict.json content `verdict` (written to `where`): the counts,
    one line per unlearned model (worst first, with its worst route of each kind), and under
    `fail_above_pct` the cells of the routes `fail_on` names that fail the gate, worst first; and
    whether any does."""
    counts = verdict.get("counts", {})
    lines = [f"verdict: {where}: " + (", ".join(f"{n} {v}" for v, n in counts.items()) or "no cells")]
    width = max((len(f"{m['model']}@{m['target']}") for m in verdict["models"]), default=0)
    for m in verdict["models"]:
        name = f"{m['model']}@{m['target']}"
        lines.append(f"  {m['verdict']:<17} {name:<{width}}  {m['why']}")
        if m["verdict"] not in STATES:  # a state holds for every route: the line above says it
            lines.append(f"  {'':<17} {'':<{width}}  {route_line(m.get('routes', {}))}")
    if fail_above_pct is None:
        return lines, False
    failing = failing_cells(verdict, fail_above_pct, fail_on)
    excluded = sum(c["verdict"] == stats.NOTHING_TO_FORGET for c in verdict["cells"])
    routes = "" if fail_on == "any" else f" {ROUTE_TITLES[fail_on]}"
    rule = f"a recovery{routes} above {fail_above_pct:g} % or a model not shown to forget"
    cells = f"{len(failing)} cell" + ("s" if len(failing) > 1 else "")
    lines.append(f"gate ({rule}): " + (f"FAIL, {cells}" if failing else "pass"))
    for c in failing[:GATE_LINES]:
        lines.append(f"  {c['model']}@{c['target']}: {c['verdict']}: {c['why']}")
    if len(failing) > GATE_LINES:
        lines.append(f"  … and {len(failing) - GATE_LINES} more, worst first in verdict.json")
    if excluded:
        lines.append(f"excluded from the gate: {excluded} model × metric rows with nothing to forget")
    return lines, bool(failing)


def route_line(routes: dict[str, dict[str, Any] | None]) -> str:
    """'as shipped: holds, rtn-w4-g32 12% · under attack: fails, relearn-forget-10 84%' from a
    verdict.json model's `routes` (a route without a column reads `no column`)."""
    parts = []
    for r in ROUTES:
        w = routes.get(r)
        if w is None:
            parts.append(f"{ROUTE_TITLES[r]}: no column")
            continue
        recovery = "" if w["recovery"] is None else f" {w['recovery']:.0f}%"
        parts.append(f"{ROUTE_TITLES[r]}: {w['verdict']}, {w['quantizer']}{recovery}")
    return " · ".join(parts)


def verdict_settings(recipe: dict[str, Any] | None, where: str = "recipe.yaml") -> VerdictSection:
    """The run recipe's `verdict` section, or the defaults when it has none (an older run folder)."""
    return validate_model(VerdictSection, (recipe or {}).get("verdict") or {}, f"{where}: verdict")


@dataclass
class MetricTables:
    """The audit as tables: values[metric][(model, target)][quantizer] = agg_value."""

    values: dict[str, dict[tuple[str, str], dict[str, float]]]
    quantizers: list[str]  # the columns in audit order: fp first, then quantizers, then relearn checks
    configs: dict[str, dict[str, Any]]  # each column's recorded configuration

    def has_grid_aligned(self) -> bool:
        """Whether a target of the run is the grid-aligned copy (`model.grid_align`)."""
        return any(t == GRID_ALIGNED for rows in self.values.values() for _, t in rows)

    def columns_of(self, metric: str) -> list[str]:
        """The columns with a cell of `metric` (an attack column has none of a retain metric), in
        audit order: a metric's table shows no column that never evaluates it."""
        return [q for q in self.quantizers if any(q in row for row in self.values[metric].values())]

    def is_change(self, column: str) -> bool:
        """Whether `column` is a change made to the model (a relearn check, at full precision) rather
        than a precision or format it ships in (a quantizer): its kind says (`columns.is_format`)."""
        return not is_format(self.configs.get(column, {}))


def metric_tables(results: list[dict[str, Any]]) -> MetricTables:
    values: dict[str, dict[tuple[str, str], dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    quantizers: list[str] = []
    configs: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["metric"] == DIAGNOSTICS:
            continue
        values[r["metric"]][(r["model"], r["target"])][r["quantizer"]] = r["agg_value"]
        if r["quantizer"] not in quantizers:
            quantizers.append(r["quantizer"])
        configs[r["quantizer"]] = r.get("quantizer_config", {})
    # changes (relearn columns) after every format, also when a re-run added a quantizer after them
    quantizers.sort(key=lambda q: not is_format(configs[q]))
    return MetricTables(values, quantizers, configs)


def render_markdown(results: list[dict[str, Any]], title: str, cells: AuditCells | None = None) -> str:
    tables = metric_tables(results)
    cells = cells or AuditCells(results)
    table, quantizers, configs = tables.values, tables.quantizers, tables.configs
    diagnostics = [r for r in results if r["metric"] == DIAGNOSTICS]
    lines = [f"# Quantization-robustness audit: {title}", ""]
    lines += verdict_markdown(cells)
    lines += [
        "## The audit, cell by cell",
        "",
        "Rows: the target before unlearning, the retrain model (never saw the forget set), and each",
        "unlearned model on each target. Cells: the metric [its interval]; for unlearned models under a",
        "column, (the recovery ratio [its interval]): the share of the forgotten amount that the column",
        "brings back (0 % kept, 100 % back at the target), or why there is none (not forgotten: unlearning",
        "did not move the metric by a point clear of 0; nothing to forget: the target knows no more than",
        "the retrain model).",
        "Columns that change the model rather than the format it ships in (relearn-…: a few fine-tuning",
        "steps on forget or retain text, full or through a LoRA adapter; prune-…: weights pruned) are",
        "listed last; their ratio is the share that change brings back. Each column's route (as shipped,",
        "under attack) and settings are listed at the end.",
        *_target_note(tables),
        "",
    ]
    lines += _summary(cells, table, quantizers)
    for metric, rows in table.items():
        shown = tables.columns_of(metric)
        lines += [f"### {metric_title(metric)}", ""]
        lines.append("| model | target | " + " | ".join(shown) + " |")
        lines.append("|---|---|" + "---|" * len(shown))
        for model, target in sorted(rows, key=row_order):
            found = [cells.get(model, target, q, metric) for q in shown]
            texts = ["" if c is None else c.text() for c in found]
            lines.append(f"| {model} | {TARGET_LABELS.get(target, target)} | " + " | ".join(texts) + " |")
        lines.append("")
    lines += _diagnostics(diagnostics)
    lines += ["## Columns", ""]
    for group in ROUTES:
        names = [q for q in quantizers if route(configs[q]) == group]
        if names:
            lines += [f"{ROUTE_TITLES[group].capitalize()}:", ""]
            lines += [f"- `{name}`: {configs[name]}" for name in names]
            lines.append("")
    return "\n".join(lines)


def _target_note(tables: MetricTables) -> list[str]:
    """What the targets of this run are: a grid-aligned copy, where the run made one."""
    if not tables.has_grid_aligned():
        return []
    return [
        "The `grid-aligned` target is a copy of the given one whose Linear weights already sit on the",
        "low-bit grid, as in a model released as dequantized 4-bit weights; the other target is the",
        "model as given.",
    ]


def verdict_legend(settings: VerdictSection) -> str:
    """What every verdict, `~` and the intervals mean, under `settings`."""
    s = settings
    return (
        f"{stats.NOT_FORGOTTEN}: the target knows, but unlearning did not move the metric by a point with an "
        "interval clear of 0 at full precision (fails the gate). Where the model forgot, the recovery "
        f"under each column: {stats.FAILS}: all of its interval is at or above {s.fails_from:g} %; "
        f"{stats.PARTLY}: otherwise; {stats.HOLDS}: all of it is below {s.holds_below:g} %; {CROSSES}: the "
        f"interval crosses {s.holds_below:g} % or {s.fails_from:g} %. {stats.NOTHING_TO_FORGET}: the target "
        "knows no more than the retrain model (or, without one, sits at the metric's floor): the metric "
        "cannot test this forget set, and the gate leaves it out. Intervals: "
        f"{s.confidence:.0%} percentile bootstrap over the examples, {s.resamples} resamples, seed "
        f"{s.seed}, paired across the target, unlearned and column cells (PrivLeak: passages "
        "resampled within forget and holdout, the retrain model's AUC held fixed)."
    )


VERDICT_HEADING = "Verdict: does the forgetting survive every route back?"
ROUTES_NOTE = (
    "as shipped (full precision, the formats and casts it is released in) and under attack (cheap "
    "steps someone takes after release: relearning, pruning, adversarial calibration, in-context shots)."
)


def route_text(cell: Cell | None) -> str:
    """A route's worst cell as a table shows it: `fails: relearn-forget-10 knowmem_f 84% [70%, 95%]`."""
    if cell is None:
        return "–"
    if cell.verdict in STATES:
        return cell.verdict
    return f"{cell.verdict}: {cell.quantizer} {cell.metric} {cell.recovery_text()}"


def verdict_counts(cells: list[Cell]) -> str:
    """'1 not forgotten, 2 fails, 3 partly back, 5 holds, 0 nothing to forget' over `cells`."""
    counts = Counter(c.verdict for c in cells)
    return ", ".join(f"{counts[v]} {v}" for v in VERDICT_ORDER)


def gate_note(settings: VerdictSection) -> str:
    chosen = settings.metrics
    return "every forget metric" if chosen is None else ", ".join(chosen)


def verdict_markdown(cells: AuditCells, model: str | None = None, target: str | None = None) -> list[str]:
    """The verdict sections: the legend, one row per unlearned model (of one model if given), then
    every verdict row worst first, each with why."""
    rows = cells.verdict_cells(model, target)
    lines = [f"## {VERDICT_HEADING}", ""]
    if not rows:
        return [*lines, "No verdict: no unlearned model has a forget metric at full precision.", ""]
    lines += [
        verdict_legend(cells.settings),
        "",
        "One row per unlearned model: its worst cell among the metrics that gate "
        f"({gate_note(cells.settings)}), and the worst column of each route: {ROUTES_NOTE}",
        "",
        "| model | target | verdict | " + "".join(f"worst {t} | " for t in ROUTE_TITLES.values()) + "why |",
        "|---|---|---|" + "---|" * len(ROUTES) + "---|",
    ]
    for v in cells.model_verdicts(model, target):
        routes = " | ".join(route_text(v.routes[r]) for r in ROUTES)
        target_label = TARGET_LABELS.get(v.target, v.target)
        lines.append(f"| {v.model} | {target_label} | **{v.verdict}** | {routes} | {v.worst.why()} |")
    lines += [
        "",
        f"Every verdict row, worst first ({len(rows)}): **{verdict_counts(rows)}**.",
        "",
        "| verdict | model | target | column | metric | recovery [interval] | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        recovery = c.recovery_text() if c.has_recovery else ""
        target_label = TARGET_LABELS.get(c.target, c.target)
        gated = "" if c.gates else " (not gating)"
        lines.append(
            f"| {c.verdict}{gated} | {c.model} | {target_label} | {c.quantizer} | {c.metric} | {recovery} "
            f"| {c.why()} |"
        )
    return [*lines, ""]


DIAGNOSTIC_COLUMNS = {
    "bucket_overlap": "bucket overlap",
    "code_overlap": "same code",
    "crossing": "crossed a threshold",
    "update_kept": "update kept",
    "delta_over_step": "mean |Δ| / step",
    "grid_distance": "target's distance to grid / step",
}


def _diagnostics(records: list[dict[str, Any]]) -> list[str]:
    """Whole-model weight diagnostics of each unlearned model against its target, per quantizer."""
    if not records:
        return []
    lines = [
        "## Weight diagnostics: the unlearning update under each quantizer (no evaluation)",
        "",
        "Bucket overlap: weights whose code is unchanged (same grid) or whose dequantized value is",
        "unchanged (grid moved). Update kept: ⟨Q(W_u) − Q(W_t), Δ⟩ / ‖Δ‖² (0 = rounded away). Per-layer",
        "values are in results.jsonl; AWQ rescales weights before rounding, so only its overlaps show.",
        "",
        "| model | target | quantizer | " + " | ".join(DIAGNOSTIC_COLUMNS.values()) + " |",
        "|---|---|---|" + "---|" * len(DIAGNOSTIC_COLUMNS),
    ]
    for r in sorted(records, key=lambda r: (r["target"], r["model"], r["quantizer"])):
        overall = r["overall"]
        cells = [diagnostic_cell(key, overall.get(key)) for key in DIAGNOSTIC_COLUMNS]
        target = TARGET_LABELS.get(r["target"], r["target"])
        lines.append(f"| {r['model']} | {target} | {r['quantizer']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def diagnostic_cell(key: str, value: float | None) -> str:
    """A weight diagnostic as both reports show it: shares in percent, step ratios as numbers."""
    if value is None:
        return "–"
    return f"{value:.3f}" if key in ("delta_over_step", "grid_distance") else f"{value:.2%}"


def _summary(
    cells: AuditCells, table: dict[str, dict[tuple[str, str], dict[str, float]]], quantizers: list[str]
) -> list[str]:
    """Per forget metric and target: the range of recovery ratios over the methods, per quantizer."""
    lines = ["### Summary: share of the forgotten knowledge each column brings back, over the models", ""]
    lines += ["| metric | target | " + " | ".join(q for q in quantizers if q != "fp") + " |"]
    lines += ["|---|---|" + "---|" * (len(quantizers) - 1)]
    for metric in (m for m in table if is_forget_metric(m)):
        rows = table[metric]
        for target in sorted({t for model, t in rows if is_unlearned(model)}):
            texts = []
            for q in quantizers[1:]:
                found = [cells.get(model, t, q, metric) for model, t in rows if t == target]
                ratios = sorted(c.recovery.value for c in found if c and c.has_recovery)
                texts.append(_range(ratios))
            lines.append(f"| {metric} | {TARGET_LABELS.get(target, target)} | " + " | ".join(texts) + " |")
    return [*lines, ""]


def _range(ratios: list[float]) -> str:
    """'3% … 96% (5 models)', or the one value; blank without any."""
    if not ratios:
        return ""
    if len(ratios) == 1:
        return f"{percent(ratios[0])} (1 model)"
    return f"{percent(ratios[0])} … {percent(ratios[-1])} ({len(ratios)} models)"


def is_unlearned(model: str) -> bool:
    return model not in ("target", "retrain")


def row_order(key: tuple[str, str]) -> tuple[int, str, str]:
    model, target = key
    rank = {"target": 0, "retrain": 1}.get(model, 2)
    return (rank, target, model)
