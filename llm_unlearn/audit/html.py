"""report.html: the audit as one self-contained page (tables coloured by recovery, embedded plots,
the worst examples, everything needed to reproduce), from the run folder's result files.

Rendered with a Jinja2 template that escapes every value, so model outputs (which may contain
markup) show as text. Plots are matplotlib PNGs embedded as data URIs: the page needs no network.
"""

from __future__ import annotations

import base64
import io
import json
from importlib import metadata
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader
from matplotlib import colormaps
from matplotlib.figure import Figure

from llm_unlearn.audit import stats
from llm_unlearn.audit.report import (
    DIAGNOSTIC_COLUMNS,
    ROUTE_TITLES,
    ROUTES_NOTE,
    TARGET_LABELS,
    VERDICT_HEADING,
    VERDICT_ORDER,
    AuditCells,
    Cell,
    MetricTables,
    ModelVerdict,
    diagnostic_cell,
    gate_note,
    metric_tables,
    metric_title,
    route_text,
    row_order,
    verdict_counts,
    verdict_legend,
)
from llm_unlearn.metrics import METRICS

#: the colour of each verdict: never forgotten / forgetting failed / partly back / kept / untestable
VERDICT_CSS = {
    stats.NOT_FORGOTTEN: "never",
    stats.FAILS: "back",
    stats.PARTLY: "partly",
    stats.HOLDS: "kept",
    stats.NOTHING_TO_FORGET: "none",
}
#: the verdicts whose examples show forgetting that came back under a column
CAME_BACK = (stats.FAILS, stats.PARTLY)
EXAMPLES = 5
_COLOURS = colormaps["tab20"]
PACKAGES = ("llm-unlearn", "torch", "transformers", "accelerate", "peft", "llmcompressor", "bitsandbytes")


def render_html(
    results: list[dict[str, Any]],
    diagnostics: list[dict[str, Any]],
    title: str,
    recipe: dict | None = None,
    cells: AuditCells | None = None,
) -> str:
    tables = metric_tables(results)
    cells = cells or AuditCells(results)
    verdicts = cells.verdict_cells()
    env = Environment(loader=PackageLoader("llm_unlearn", "audit/templates"), autoescape=True)
    return env.get_template("report.html.j2").render(
        title=title,
        verdict_counts=verdict_counts(verdicts) if verdicts else None,
        models=[_model_view(v) for v in cells.model_verdicts()],
        heading=VERDICT_HEADING,
        route_titles=list(ROUTE_TITLES.values()),
        routes_note=ROUTES_NOTE,
        gate=gate_note(cells.settings),
        verdicts=[_verdict_view(c) for c in verdicts],
        legend=verdict_legend(cells.settings),
        states=[{"verdict": v, "css": VERDICT_CSS[v]} for v in VERDICT_ORDER],
        has_relearn=any(tables.is_change(q) for q in tables.quantizers),
        has_grid=tables.has_grid_aligned(),
        metrics=[_metric_view(tables, cells, metric) for metric in tables.values],
        plots=_plots(tables, diagnostics),
        diagnostic_columns=list(DIAGNOSTIC_COLUMNS.values()),
        diagnostics=[_diagnostic_view(r) for r in sorted(diagnostics, key=_diagnostic_order)],
        examples=worst_examples(results, cells),
        versions=_versions(),
        quantizer_configs=json.dumps(tables.configs, indent=1),
        recipe=yaml.safe_dump(recipe, sort_keys=False) if recipe else None,
    )


def worst_examples(
    results: list[dict[str, Any]], cells: AuditCells, n: int = EXAMPLES
) -> list[dict[str, Any]]:
    """Per forget metric with model outputs (VerbMem, KnowMem), the n examples that unlearned models
    reproduce best under a column that brought the forgetting back (verdict fails or partly back)."""
    found = []
    for r in results:
        cell = cells.get(r["model"], r["target"], r["quantizer"], r["metric"])
        if cell is None or cell.verdict not in CAME_BACK:
            continue
        # PrivLeak's examples are membership scores of passages, not outputs to show
        for example in (e for e in r.get("value_by_index", {}).values() if "output" in e):
            found.append(
                {
                    "model": r["model"],
                    "target": TARGET_LABELS.get(r["target"], r["target"]),
                    "quantizer": r["quantizer"],
                    "metric": r["metric"],
                    "prompt": example.get("prompt") or example.get("question", ""),
                    "gold": example.get("gold", ""),
                    "output": example.get("output", ""),
                    "score": example.get("score", 0.0),
                }
            )
    found.sort(key=lambda e: -e["score"])
    # the top n of each forget metric: KnowMem's short answers would otherwise crowd out VerbMem
    metrics = dict.fromkeys(e["metric"] for e in found)
    top = [e for metric in metrics for e in [e for e in found if e["metric"] == metric][:n]]
    return [{**e, "score": f"{e['score']:.1f}"} for e in top]


def _metric_view(tables: MetricTables, cells: AuditCells, metric: str) -> dict[str, Any]:
    view, shown = [], tables.columns_of(metric)
    for model, target in sorted(tables.values[metric], key=row_order):
        row = []
        for q in shown:
            cell = cells.get(model, target, q, metric)
            row.append({"text": cell.text() if cell else "", "css": css(cell)})
        view.append({"model": model, "target": TARGET_LABELS.get(target, target), "cells": row})
    return {"title": metric_title(metric), "columns": shown, "rows": view}


def css(cell: Cell | None) -> str:
    """A forget cell's colour: its verdict's, or, in a column of a model that did not forget (or
    had nothing to forget), that state's; none for other cells."""
    if cell is None or cell.forgetting is None:
        return ""
    verdict = cell.verdict or cell.forgetting.state
    return VERDICT_CSS.get(verdict, "")


def _model_view(verdict: ModelVerdict) -> dict[str, Any]:
    routes = [{"text": route_text(c), "css": css(c)} for c in verdict.routes.values()]
    return {**_verdict_view(verdict.worst), "routes": routes}


def _verdict_view(cell: Cell) -> dict[str, str]:
    return {
        "verdict": cell.verdict,
        "css": css(cell),
        "model": cell.model,
        "target": TARGET_LABELS.get(cell.target, cell.target),
        "quantizer": cell.quantizer,
        "metric": cell.metric,
        "recovery": cell.recovery_text() if cell.has_recovery else "",
        "gates": cell.gates,
        "why": cell.why(),
    }


def _diagnostic_order(record: dict[str, Any]) -> tuple[str, str, str]:
    return (record["target"], record["model"], record["quantizer"])


def _diagnostic_view(record: dict[str, Any]) -> dict[str, Any]:
    overall = record["overall"]
    return {
        "model": record["model"],
        "target": TARGET_LABELS.get(record["target"], record["target"]),
        "quantizer": record["quantizer"],
        "cells": [diagnostic_cell(key, overall.get(key)) for key in DIAGNOSTIC_COLUMNS],
    }


def _bits(config: dict[str, Any]) -> float:
    """A quantizer's weight bits; full precision counts as 16, NF4/FP4 as 4, int8 as 8."""
    return float(config.get("bits") or (16 if config.get("method") in (None, "none") else 0))


def _plots(tables: MetricTables, diagnostics: list[dict[str, Any]]) -> list[dict[str, str]]:
    plots = [_metric_vs_bits(tables)]
    pairs = [(m, METRICS.get(m).paired_with) for m in tables.values if m in METRICS]
    pairs = [(forget, retain) for forget, retain in pairs if retain in tables.values]
    if pairs:  # the first forget metric drawn against its retain twin (`Metric.paired_with`)
        plots.append(_tradeoff(tables, *pairs[0]))
    if diagnostics:
        plots.append(_update_kept_histogram(diagnostics))
    return plots


def _colours(tables: MetricTables) -> dict[tuple[str, str], Any]:
    """One colour per (model, target) row, the same in every plot."""
    keys = sorted({key for rows in tables.values.values() for key in rows}, key=row_order)
    return {key: _COLOURS(i % _COLOURS.N) for i, key in enumerate(keys)}


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _metric_vs_bits(tables: MetricTables) -> dict[str, str]:
    # changes made to the model (relearning) are full precision: they have no place on a bits axis
    quantizers = [q for q in tables.quantizers if not tables.is_change(q)]
    order = sorted(quantizers, key=lambda q: -_bits(tables.configs.get(q, {})))
    metrics = list(tables.values)
    fig = Figure(figsize=(5.2 * min(len(metrics), 2), 3.6 * ((len(metrics) + 1) // 2)))
    axes = fig.subplots((len(metrics) + 1) // 2, min(len(metrics), 2), squeeze=False).flatten()
    colours = _colours(tables)
    for ax, metric in zip(axes, metrics, strict=False):
        rows = tables.values[metric]
        for key in sorted(rows, key=row_order):
            model, target = key
            ys = [rows[key].get(q) for q in order]
            style = "--" if model == "target" else ":" if model == "retrain" else "-"
            label = f"{model} ({TARGET_LABELS.get(target, target)})"
            ax.plot(range(len(order)), ys, style, marker="o", ms=3, color=colours[key], label=label)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=4)
    return {
        "title": "Each metric from full precision to the fewest bits",
        "note": "Quantizers ordered by weight bits. A forget metric that climbs back toward the dashed "
        "target line as the bits drop is forgetting that quantization undoes.",
        "png": _png(fig),
    }


def _tradeoff(tables: MetricTables, forget_metric: str, retain_metric: str) -> dict[str, str]:
    forget, retain = tables.values[forget_metric], tables.values[retain_metric]
    quantizers = [q for q in tables.quantizers if not tables.is_change(q)]
    lowest = min(quantizers, key=lambda q: _bits(tables.configs.get(q, {})))
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    colours = _colours(tables)
    for key in sorted(forget, key=row_order):
        if key not in retain:
            continue
        model, target = key
        points = [(retain[key].get(q), forget[key].get(q)) for q in ("fp", lowest)]
        if None in points[0]:
            continue
        colour = colours[key]
        ax.plot(*points[0], "o", color=colour, label=f"{model} ({TARGET_LABELS.get(target, target)})")
        if None not in points[1] and lowest != "fp":
            ax.annotate("", points[1], points[0], arrowprops={"arrowstyle": "->", "color": colour})
            ax.plot(*points[1], "x", color=colour)
    forgets, retains = METRICS.get(forget_metric), METRICS.get(retain_metric)
    ax.set_xlabel(f"{retains.title or retain_metric} (utility, higher is better)")
    direction = "lower" if forgets.lower_forgets else "higher"
    ax.set_ylabel(f"{forgets.title or forget_metric} ({direction} = more forgotten)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return {
        "title": "Forgetting vs utility, and where quantization moves each model",
        "note": f"Circles: full precision; arrows end at {lowest} (×). The ideal sits bottom right, "
        "near the retrain model; an arrow pointing up is forgetting undone by quantization.",
        "png": _png(fig),
    }


def _update_kept_histogram(diagnostics: list[dict[str, Any]]) -> dict[str, str]:
    quantizers = list(dict.fromkeys(r["quantizer"] for r in diagnostics))
    fig = Figure(figsize=(4.5 * len(quantizers), 3.2))
    axes = fig.subplots(1, len(quantizers), squeeze=False)[0]
    for ax, quantizer in zip(axes, quantizers, strict=True):
        for target in sorted({r["target"] for r in diagnostics}):
            kept = [
                layer["update_kept"]
                for r in diagnostics
                if r["quantizer"] == quantizer and r["target"] == target
                for layer in r.get("layers", {}).values()
                if layer.get("update_kept") is not None
            ]
            if kept:
                ax.hist(kept, bins=20, alpha=0.6, label=TARGET_LABELS.get(target, target))
        ax.set_title(quantizer, fontsize=10)
        ax.set_xlabel("share of the update kept, per layer")
        ax.legend(fontsize=7)
    return {
        "title": "How much of each layer's unlearning update survives quantization",
        "note": "Per-layer ⟨Q(W_u) − Q(W_t), Δ⟩ / ‖Δ‖² over all unlearned models: near 0 the update is "
        "rounded away (the model is the target again), near 1 it is kept.",
        "png": _png(fig),
    }


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
