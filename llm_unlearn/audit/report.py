"""report.md from a run folder's results.jsonl (and diagnostics.jsonl): one table per metric, with
recovery ratios, and the weight diagnostics.

Recovery of a metric M under quantizer q (METHODS.md), for an unlearned model u of target t:

    recovery = (M(q(u)) − M(u)) / (M(t) − M(u))        all but q(u) at full precision

0 % = quantization keeps the forgetting, 100 % = the quantized model is back at the target.
A relearn column (`audit/relearn.py`: the model after a few fine-tuning steps, at full precision)
takes the place of q(u) the same way. It is left blank when unlearning barely moved the metric
(|M(t) − M(u)| < 1 point): a ratio of two tiny differences says nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.audit.relearn import RELEARN_METHOD
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.audit.run import DIAGNOSTICS, DIAGNOSTICS_FILE

TITLES = {
    "verbmem": "VerbMem on forget (ROUGE-L F1 × 100, lower = more forgotten)",
    "knowmem_forget": "KnowMem on forget (ROUGE-L F1 × 100, lower = more forgotten)",
    "knowmem_retain": "KnowMem on retain (ROUGE-L F1 × 100, higher = more utility kept)",
    "privleak": "PrivLeak (Min-K% Prob AUC vs the retrain model, %, near 0 is ideal)",
}
TARGET_LABELS = {"natural": "natural", "grid": "grid-aligned", "-": "–"}
MIN_FORGOTTEN = 1.0


def recovery(quantized: float, unlearned: float, target: float) -> float | None:
    """(M_q(u) − M(u)) / (M(t) − M(u)), or None when unlearning did not move the metric."""
    if abs(target - unlearned) < MIN_FORGOTTEN:
        return None
    return (quantized - unlearned) / (target - unlearned)


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report.md and report.html from the run's result files; return the .md path."""
    results = list(ResultsFile(run_dir / "results.jsonl"))
    diagnostics_path = run_dir / DIAGNOSTICS_FILE
    diagnostics = list(ResultsFile(diagnostics_path)) if diagnostics_path.is_file() else []
    recipe_path = run_dir / "recipe.yaml"
    recipe = yaml.safe_load(recipe_path.read_text()) if recipe_path.exists() else None
    text = render_markdown(results + diagnostics, title=recipe["name"] if recipe else run_dir.name)
    if recipe:
        text += "\n## Recipe\n\n```yaml\n" + yaml.safe_dump(recipe, sort_keys=False) + "```\n"
    path = run_dir / "report.md"
    path.write_text(text)
    from llm_unlearn.audit.html import write_html  # html imports this module's tables

    write_html(run_dir, results, diagnostics)
    return path


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


def render_markdown(results: list[dict[str, Any]], title: str) -> str:
    tables = metric_tables(results)
    table, quantizers, configs = tables.values, tables.quantizers, tables.configs
    diagnostics = [r for r in results if r["metric"] == DIAGNOSTICS]
    lines = [f"# Quantization-robustness audit: {title}", ""]
    lines += [
        "Rows: the target before unlearning, the retrain model (never saw the forget set), and each",
        "unlearning method on each target. Cells: the metric; for unlearned models under a quantizer,",
        "(the recovery ratio): the share of the forgotten amount that quantization brings back",
        "(0 % kept, 100 % back at the target; blank where unlearning moved the metric < 1 point).",
        "Columns named relearn-… (when the recipe has a relearn section) are each model after a few",
        "fine-tuning steps on a slice of forget or retain text, at full precision; their ratio is the",
        "share that relearning brings back.",
        "The `grid-aligned` target's Linear weights already sit on the low-bit grid, as in a model",
        "released as dequantized 4-bit weights; the `natural` target is trained normally.",
        "",
    ]
    lines += _summary(table, quantizers)
    for metric, rows in table.items():
        lines += [f"## {TITLES.get(metric, metric)}", ""]
        lines.append("| model | target | " + " | ".join(quantizers) + " |")
        lines.append("|---|---|" + "---|" * len(quantizers))
        for (model, target), values in sorted(rows.items(), key=lambda kv: row_order(kv[0])):
            cells = []
            for q in quantizers:
                value = values.get(q)
                cell = "" if value is None else f"{value:.1f}"
                ratio = row_recovery(rows, model, target, q)
                cells.append(cell + (f" ({ratio:.0%})" if ratio is not None else ""))
            lines.append(f"| {model} | {TARGET_LABELS.get(target, target)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _diagnostics(diagnostics)
    lines += ["## Quantizers", ""]
    lines += [f"- `{name}`: {configs[name]}" for name in quantizers if not tables.is_relearn(name)]
    relearn = [name for name in quantizers if tables.is_relearn(name)]
    if relearn:
        lines += ["", "## Relearn checks", ""]
        lines += [f"- `{name}`: {configs[name]}" for name in relearn]
    return "\n".join(lines) + "\n"


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


def _summary(table: dict[str, dict[tuple[str, str], dict[str, float]]], quantizers: list[str]) -> list[str]:
    """Per forget metric and target: the range of recovery ratios over the methods, per quantizer."""
    lines = ["## Summary: share of the forgotten knowledge that quantization (or relearning) brings back", ""]
    lines += ["| metric | target | " + " | ".join(q for q in quantizers if q != "fp") + " |"]
    lines += ["|---|---|" + "---|" * (len(quantizers) - 1)]
    for metric in ("knowmem_forget", "verbmem"):
        rows = table.get(metric, {})
        for target in sorted({t for model, t in rows if is_unlearned(model)}):
            cells = []
            for q in quantizers[1:]:
                ratios = [row_recovery(rows, model, t, q) for model, t in rows if t == target]
                ratios = sorted(r for r in ratios if r is not None)
                cells.append(f"{ratios[0]:.0%} … {ratios[-1]:.0%} ({len(ratios)} methods)" if ratios else "")
            lines.append(f"| {metric} | {TARGET_LABELS.get(target, target)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def is_unlearned(model: str) -> bool:
    return model not in ("target", "retrain")


def row_recovery(
    rows: dict[tuple[str, str], dict[str, float]], model: str, target: str, quantizer: str
) -> float | None:
    """The recovery ratio of one unlearned row under `quantizer`, against its own target at fp;
    None for the target and retrain rows, for `fp` itself, and where a cell is missing."""
    values = rows[(model, target)]
    base = rows.get(("target", target), {}).get("fp")
    if (
        not is_unlearned(model)
        or quantizer == "fp"
        or None in (values.get(quantizer), values.get("fp"), base)
    ):
        return None
    return recovery(values[quantizer], values["fp"], base)


def row_order(key: tuple[str, str]) -> tuple[int, str, str]:
    model, target = key
    rank = {"target": 0, "retrain": 1}.get(model, 2)
    return (rank, target, model)
