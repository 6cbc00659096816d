"""The audit: every model × quantizer × metric cell, resumable, one results line per cell.

Each model is loaded fresh from its checkpoint for each quantizer (quantizers work in place),
so the audit needs only the checkpoint folders and can run alone after training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.metrics import EvalContext, evaluate
from llm_unlearn.metrics.privleak import privleak_value
from llm_unlearn.models import load_model
from llm_unlearn.quant import get_quantizer

#: the target column of rows that belong to no target (the retrain model)
NO_TARGET = "-"


@dataclass(frozen=True)
class AuditModel:
    name: str  # "target", "retrain" or a method name
    target: str  # "natural", "grid" or NO_TARGET
    path: Path


def audit(
    models: Sequence[AuditModel],
    quantizers: Sequence[str],
    metrics: Sequence[str],
    ctx: EvalContext,
    results: ResultsFile,
    progress: Progress | None = None,
) -> None:
    """Fill every missing cell of `results`; the retrain model goes first (PrivLeak's reference)."""
    ordered = sorted(models, key=lambda m: m.name != "retrain")
    task = progress.add_task("audit", total=len(ordered) * len(quantizers)) if progress else None
    for model in ordered:
        for quantizer_name in quantizers:
            pending = [m for m in metrics if results.get(model.name, model.target, quantizer_name, m) is None]
            if progress:
                progress.update(task, description=f"audit {model.name}@{model.target} {quantizer_name}")
            if pending:
                _evaluate_cell(model, quantizer_name, pending, ctx, results)
            if progress:
                progress.advance(task)


def _evaluate_cell(
    model: AuditModel, quantizer_name: str, metrics: list[str], ctx: EvalContext, results: ResultsFile
) -> None:
    quantizer = get_quantizer(quantizer_name)
    network = quantizer.quantize_model(load_model(model.path))
    for metric in metrics:
        start = time.perf_counter()
        is_privleak = metric.startswith("privleak")
        reference = _reference_auc(results, metric) if is_privleak else None
        value = evaluate(network, dataclasses.replace(ctx, privleak_reference_auc=reference), [metric])[
            metric
        ]
        if is_privleak and model.name == "retrain" and reference is None:
            # The retrain model at full precision defines the reference: its PrivLeak is 0 by definition.
            value.update(agg_value=privleak_value(value["auc"], value["auc"]), reference_auc=value["auc"])
            value["reference"] = "retrain"
        results.add(
            {
                "model": model.name,
                "target": model.target,
                "quantizer": quantizer_name,
                "metric": metric,
                "checkpoint": str(model.path),
                "quantizer_config": quantizer.config(),
                "seconds": round(time.perf_counter() - start, 2),
                **value,
            }
        )


def _reference_auc(results: ResultsFile, metric: str) -> float | None:
    """PrivLeak's reference: the retrain model's membership AUC at full precision, when audited."""
    record = results.get("retrain", NO_TARGET, "fp", metric)
    return None if record is None else record["auc"]
