"""report.md, report.html and verdict.json from a run folder's results.jsonl (and diagnostics.jsonl):
the release verdict first, then one table per metric with intervals and recovery ratios, and the
weight diagnostics.

Recovery of a metric M under quantizer q (METHODS.md), for an unlearned model u of target t:

    recovery = (M(q(u)) − M(u)) / (M(t) − M(u))        all but q(u) at full precision

0 % = quantization keeps the forgetting, 100 % = the quantized model is back at the target.
A relearn column (`audit/relearn.py`: the model after a few fine-tuning steps, at full precision)
takes the place of q(u) the same way. Intervals, the undefined rule and the verdict are
`audit/stats.py`'s; `AuditCells` is the one place that applies them to a run's cells, for every
view (report.md, report.html, verdict.json, the Hub card).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.audit import stats
from llm_unlearn.audit.relearn import RELEARN_METHOD
from llm_unlearn.audit.results import Key, ResultsFile, cell_key
from llm_unlearn.audit.run import DIAGNOSTICS
from llm_unlearn.metrics import METRICS
from llm_unlearn.recipe import VerdictSection, validate_model
from llm_unlearn.runfolder import (
    AUDITED_TARGET,
    GRID_ALIGNED,
    NATURAL,
    NO_TARGET,
    RunFolder,
    write_atomic,
    write_json,
)

TITLES = {
    "verbmem": "VerbMem on forget (ROUGE-L F1 × 100, lower = more forgotten)",
    "knowmem_forget": "KnowMem on forget (ROUGE-L F1 × 100, lower = more forgotten)",
    "knowmem_retain": "KnowMem on retain (ROUGE-L F1 × 100, higher = more utility kept)",
    "privleak": "PrivLeak (Min-K% Prob AUC vs the retrain model, %, near 0 is ideal)",
    "tofu_forget_quality": "TOFU forget quality (KS p-value vs the retrain model, higher = more forgotten)",
    "tofu_model_utility": "TOFU model utility (harmonic mean of nine, higher = more utility kept)",
    "tofu_prob": "TOFU answer probability on forget (lower = more forgotten)",
    "tofu_rouge": "TOFU ROUGE-L recall on forget (lower = more forgotten)",
    "tofu_truth_ratio": "TOFU truth ratio on forget (mean min(R, 1/R), near 1 = forgotten)",
    "lm_eval": "lm-evaluation-harness (mean accuracy over the recipe's tasks)",
}
TARGET_LABELS = {NATURAL: NATURAL, GRID_ALIGNED: GRID_ALIGNED, AUDITED_TARGET: AUDITED_TARGET, NO_TARGET: "–"}
#: worst first
VERDICT_ORDER = (stats.FAILS, stats.PARTLY, stats.HOLDS, stats.UNDEFINED)
#: marks a recovery whose interval crosses a verdict threshold
CROSSES = "~"


def metric_point(metric: str) -> float:
    """One point of `metric`'s scale (the registry's `point`; 1 for a name no longer registered)."""
    return METRICS.get(metric).point if metric in METRICS else stats.MIN_FORGOTTEN


def is_forget_metric(metric: str) -> bool:
    """Whether `metric`'s recoveries get a verdict (the registry's `forget` flag)."""
    return metric in METRICS and METRICS.get(metric).forget


@dataclass(frozen=True)
class Cell:
    """One audit cell as every view shows it: the metric with its interval and, for an unlearned
    model under a quantizer or relearn column, the recovery (fractions) with its interval; for a
    forget metric also the verdict."""

    model: str
    target: str
    quantizer: str
    metric: str
    value: float
    ci: list[float] | None
    recovery: stats.Recovery | None = None
    verdict: str | None = None
    crosses_boundary: bool = False

    def text(self) -> str:
        """`value [lo, hi]`, then `(r% [lo%, hi%])` where a recovery is defined, `~` if it crosses."""
        # one decimal for MUSE's ×100 scores, three for values in [0, 1] (TOFU, lm-eval)
        d = 3 if metric_point(self.metric) < 1 else 1
        out = f"{self.value:.{d}f}" + (f" [{self.ci[0]:.{d}f}, {self.ci[1]:.{d}f}]" if self.ci else "")
        if self.recovery is not None and self.recovery.value is not None:
            out += f" ({self.recovery_text()})"
        return out

    def recovery_text(self) -> str:
        r = self.recovery
        ci = f" [{r.ci[0]:.0%}, {r.ci[1]:.0%}]" if r.ci else ""
        return f"{r.value:.0%}{ci}{CROSSES if self.crosses_boundary else ''}"

    def verdict_entry(self) -> dict[str, Any]:
        """The cell as a line of verdict.json: recovery and its interval in percent."""
        r = self.recovery
        return {
            "model": self.model,
            "target": self.target,
            "quantizer": self.quantizer,
            "metric": self.metric,
            "recovery": None if r.value is None else 100 * r.value,
            "recovery_ci": None if r.value is None or r.ci is None else [100 * x for x in r.ci],
            "verdict": self.verdict,
            "crosses_boundary": self.crosses_boundary,
        }


class AuditCells:
    """A run's cells with intervals, recoveries and verdicts under one set of verdict settings,
    each computed once, on first use."""

    def __init__(self, results: Iterable[dict[str, Any]], settings: VerdictSection | None = None) -> None:
        self.settings = settings or VerdictSection()
        self.records = {cell_key(r): r for r in results if r["metric"] != DIAGNOSTICS}
        self._cells: dict[Key, Cell | None] = {}

    def get(self, model: str, target: str, quantizer: str, metric: str) -> Cell | None:
        key = (model, target, quantizer, metric)
        if key not in self._cells:
            self._cells[key] = self._cell(key)
        return self._cells[key]

    def _cell(self, key: Key) -> Cell | None:
        record = self.records.get(key)
        if record is None:
            return None
        model, target, quantizer, metric = key
        s = self.settings
        bootstrap = {"resamples": s.resamples, "confidence": s.confidence, "seed": s.seed}
        cell = Cell(*key, float(record["agg_value"]), stats.metric_ci(record, **bootstrap))
        base = self.records.get(("target", target, "fp", metric))
        fp = self.records.get((model, target, "fp", metric))
        if not is_unlearned(model) or quantizer == "fp" or base is None or fp is None:
            return cell
        found = stats.paired_recovery(base, fp, record, **bootstrap, min_forgotten=metric_point(metric))
        if not is_forget_metric(metric):
            return replace(cell, recovery=found)
        ci = found.ci if found.value is not None else None
        return replace(
            cell,
            recovery=found,
            verdict=stats.verdict(found.value, ci, s.holds_below, s.fails_from),
            crosses_boundary=stats.crosses_boundary(ci, s.holds_below, s.fails_from),
        )

    def verdict_cells(self, model: str | None = None, target: str | None = None) -> list[Cell]:
        """Every verdict row (an unlearned model × quantizer or relearn column × forget metric),
        optionally of one model and target, worst first: by verdict, then by recovery."""
        cells = [self.get(*key) for key in self.records if key[2] != "fp" and is_forget_metric(key[3])]
        cells = [
            c
            for c in cells
            if c is not None
            and c.verdict is not None
            and model in (None, c.model)
            and target in (None, c.target)
        ]
        return sorted(cells, key=_worst_first)

    def verdict(self) -> dict[str, Any]:
        """verdict.json's content: the settings, the count of each verdict, and the cells worst first."""
        cells = self.verdict_cells()
        counts = Counter(c.verdict for c in cells)
        return {
            "settings": self.settings.model_dump(),
            "counts": {v: counts.get(v, 0) for v in VERDICT_ORDER},
            "cells": [c.verdict_entry() for c in cells],
        }


def _worst_first(cell: Cell) -> tuple[int, float, str, str, str, str]:
    value = cell.recovery.value
    return (
        VERDICT_ORDER.index(cell.verdict),
        -(value or 0.0),
        cell.metric,
        cell.target,
        cell.model,
        cell.quantizer,
    )


def failing_cells(verdict: dict[str, Any], fail_above_pct: float) -> list[dict[str, Any]]:
    """The cells of verdict.json content `verdict` whose point recovery is above `fail_above_pct` %."""
    return [c for c in verdict["cells"] if c["recovery"] is not None and c["recovery"] > fail_above_pct]


def verdict_settings(recipe: dict[str, Any] | None, where: str = "recipe.yaml") -> VerdictSection:
    """The run recipe's `verdict` section, or the defaults when it has none (an older run folder)."""
    return validate_model(VerdictSection, (recipe or {}).get("verdict") or {}, f"{where}: verdict")


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report.md, report.html and verdict.json from the run's result files, under the
    recipe's verdict settings (the defaults without one); return the .md path. Each file is written
    atomically: a reader (a CI gate on verdict.json) never sees half of one."""
    folder = RunFolder(run_dir)
    results = list(ResultsFile(folder.results))
    diagnostics = list(ResultsFile(folder.diagnostics)) if folder.diagnostics.is_file() else []
    recipe = folder.read_recipe()
    cells = AuditCells(results, verdict_settings(recipe, str(folder.recipe)))
    title = recipe["name"] if recipe else run_dir.name
    text = render_markdown(results + diagnostics, title, cells)
    if recipe:
        text += "\n## Recipe\n\n```yaml\n" + yaml.safe_dump(recipe, sort_keys=False) + "```\n"
    write_atomic(folder.report_md, text)
    write_json(folder.verdict, cells.verdict())
    from llm_unlearn.audit.html import render_html  # html imports this module's tables

    write_atomic(folder.report_html, render_html(results, diagnostics, title, recipe, cells))
    return folder.report_md


@dataclass
class MetricTables:
    """The audit as tables: values[metric][(model, target)][quantizer] = agg_value."""

    values: dict[str, dict[tuple[str, str], dict[str, float]]]
    quantizers: list[str]  # the columns in audit order: fp first, then quantizers, then relearn checks
    configs: dict[str, dict[str, Any]]  # each column's recorded configuration

    def is_relearn(self, column: str) -> bool:
        """Whether `column` is a relearn check (at full precision) rather than a quantizer."""
        return self.configs.get(column, {}).get("method") == RELEARN_METHOD


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
    # relearn columns after every quantizer, also when a re-run added a quantizer after them
    quantizers.sort(key=lambda q: configs[q].get("method") == RELEARN_METHOD)
    return MetricTables(values, quantizers, configs)


def render_markdown(results: list[dict[str, Any]], title: str, cells: AuditCells | None = None) -> str:
    tables = metric_tables(results)
    cells = cells or AuditCells(results)
    table, quantizers, configs = tables.values, tables.quantizers, tables.configs
    diagnostics = [r for r in results if r["metric"] == DIAGNOSTICS]
    lines = [f"# Quantization-robustness audit: {title}", ""]
    lines += verdict_markdown(cells)
    lines += [
        "Rows: the target before unlearning, the retrain model (never saw the forget set), and each",
        "unlearning method on each target. Cells: the metric [its interval]; for unlearned models under a",
        "quantizer, (the recovery ratio [its interval]): the share of the forgotten amount that",
        "quantization brings back (0 % kept, 100 % back at the target; blank where it is undefined).",
        "Columns named relearn-… (when the recipe has a relearn section) are each model after a few",
        "fine-tuning steps on a slice of forget or retain text, at full precision; their ratio is the",
        "share that relearning brings back.",
        "The `grid-aligned` target's Linear weights already sit on the low-bit grid, as in a model",
        "released as dequantized 4-bit weights; the `natural` target is trained normally.",
        "",
    ]
    lines += _summary(cells, table, quantizers)
    for metric, rows in table.items():
        lines += [f"## {TITLES.get(metric, metric)}", ""]
        lines.append("| model | target | " + " | ".join(quantizers) + " |")
        lines.append("|---|---|" + "---|" * len(quantizers))
        for model, target in sorted(rows, key=row_order):
            found = [cells.get(model, target, q, metric) for q in quantizers]
            texts = ["" if c is None else c.text() for c in found]
            lines.append(f"| {model} | {TARGET_LABELS.get(target, target)} | " + " | ".join(texts) + " |")
        lines.append("")
    lines += _diagnostics(diagnostics)
    lines += ["## Quantizers", ""]
    lines += [f"- `{name}`: {configs[name]}" for name in quantizers if not tables.is_relearn(name)]
    relearn = [name for name in quantizers if tables.is_relearn(name)]
    if relearn:
        lines += ["", "## Relearn checks", ""]
        lines += [f"- `{name}`: {configs[name]}" for name in relearn]
    return "\n".join(lines) + "\n"


def verdict_legend(settings: VerdictSection) -> str:
    """What the verdicts, `~` and the intervals mean, under `settings`."""
    s = settings
    return (
        f"holds: the whole recovery interval is below {s.holds_below:g} %; fails: all of it is at or above "
        f"{s.fails_from:g} %; partly back: otherwise; {CROSSES}: the interval crosses {s.holds_below:g} % "
        f"or {s.fails_from:g} %, so the band is not settled; undefined: unlearning moved the metric by "
        "less than 1 point or less than the width of the interval of that move. Intervals: "
        f"{s.confidence:.0%} percentile bootstrap over the examples, {s.resamples} resamples, seed "
        f"{s.seed}, paired across the target, unlearned and quantized cells (PrivLeak: passages "
        "resampled within forget and holdout, the retrain model's AUC held fixed)."
    )


def verdict_counts(cells: list[Cell]) -> str:
    """'2 fails, 3 partly back, 5 holds, 1 undefined' over `cells`."""
    counts = Counter(c.verdict for c in cells)
    return ", ".join(f"{counts[v]} {v}" for v in VERDICT_ORDER)


def verdict_markdown(cells: AuditCells, model: str | None = None, target: str | None = None) -> list[str]:
    """The verdict section: counts, then every verdict row worst first (of one model if given)."""
    rows = cells.verdict_cells(model, target)
    lines = ["## Verdict: does the forgetting survive quantization (and relearning)?", ""]
    if not rows:
        return [*lines, "No verdict: no unlearned model has a forget metric under a quantizer.", ""]
    lines += [
        f"{len(rows)} cells (unlearned model × quantizer or relearn column × forget metric): "
        f"**{verdict_counts(rows)}**.",
        "",
        "| verdict | model | target | column | metric | recovery [interval] |",
        "|---|---|---|---|---|---|",
    ]
    for c in rows:
        recovery = "" if c.recovery.value is None else c.recovery_text()
        target_label = TARGET_LABELS.get(c.target, c.target)
        lines.append(
            f"| {c.verdict} | {c.model} | {target_label} | {c.quantizer} | {c.metric} | {recovery} |"
        )
    return [*lines, "", verdict_legend(cells.settings), ""]


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
        cells = [_diagnostic_cell(key, overall.get(key)) for key in DIAGNOSTIC_COLUMNS]
        target = TARGET_LABELS.get(r["target"], r["target"])
        lines.append(f"| {r['model']} | {target} | {r['quantizer']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _diagnostic_cell(key: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if key in ("delta_over_step", "grid_distance") else f"{value:.2%}"


def _summary(
    cells: AuditCells, table: dict[str, dict[tuple[str, str], dict[str, float]]], quantizers: list[str]
) -> list[str]:
    """Per forget metric and target: the range of recovery ratios over the methods, per quantizer."""
    lines = ["## Summary: share of the forgotten knowledge that quantization (or relearning) brings back", ""]
    lines += ["| metric | target | " + " | ".join(q for q in quantizers if q != "fp") + " |"]
    lines += ["|---|---|" + "---|" * (len(quantizers) - 1)]
    for metric in (m for m in table if is_forget_metric(m)):
        rows = table[metric]
        for target in sorted({t for model, t in rows if is_unlearned(model)}):
            texts = []
            for q in quantizers[1:]:
                found = [cells.get(model, t, q, metric) for model, t in rows if t == target]
                ratios = sorted(
                    c.recovery.value for c in found if c and c.recovery and c.recovery.value is not None
                )
                texts.append(f"{ratios[0]:.0%} … {ratios[-1]:.0%} ({len(ratios)} methods)" if ratios else "")
            lines.append(f"| {metric} | {TARGET_LABELS.get(target, target)} | " + " | ".join(texts) + " |")
    return [*lines, ""]


def is_unlearned(model: str) -> bool:
    return model not in ("target", "retrain")


def row_order(key: tuple[str, str]) -> tuple[int, str, str]:
    model, target = key
    rank = {"target": 0, "retrain": 1}.get(model, 2)
    return (rank, target, model)
