"""The audit: every model × quantizer × metric cell, resumable, one results line per cell.

Each model is loaded fresh from its checkpoint for each quantizer (quantizers work in place), one
model in memory at a time, so the audit needs only the checkpoint folders and can run alone after
training. Quantized models are cached as their codes under `quantized/<model>@<target>/<quantizer>/`
in the run folder (`audit/cache.py`), so a resumed audit (or one with more metrics) does not
quantize again. After the metrics, each unlearned model is compared with its target under every
quantizer that has integer codes (`quant/overlap.py`), layer by layer from the cached codes and the
checkpoints on disk: one line per model × quantizer in `diagnostics.jsonl` beside the results.
Under a launch with several processes every process runs the audit and evaluates its share of
each metric's batches (`metrics/generation.py`); only the main process writes files.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from rich.progress import Progress
from transformers import PreTrainedModel

from llm_unlearn.audit.cache import cached_codes, cell_folder
from llm_unlearn.audit.columns import column_network, require_calibration
from llm_unlearn.audit.relearn import Relearning
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.columns import Column, get_column
from llm_unlearn.filehash import HashMemo
from llm_unlearn.kernels import evaluation
from llm_unlearn.metrics import METRICS, EvalContext, evaluate, metric_ci
from llm_unlearn.models import CheckpointTensors, eval_placement
from llm_unlearn.quant import Quantizer
from llm_unlearn.quant.calibration import Calibration
from llm_unlearn.quant.overlap import diagnose
from llm_unlearn.runfolder import NO_TARGET, RunFolder

#: the metric column of the weight diagnostics (bucket overlap, update kept, ...)
DIAGNOSTICS = "diagnostics"


@dataclass(frozen=True)
class AuditModel:
    name: str  # "target", "retrain" or a method name
    target: str  # the target's label (runfolder: NATURAL, GRID_ALIGNED, a recipe's model.name) or NO_TARGET
    path: Path


def audit(
    models: Sequence[AuditModel],
    quantizers: Sequence[str],
    metrics: Sequence[str],
    ctx: EvalContext,
    results: ResultsFile,
    progress: Progress | None = None,
    calibration: Calibration | None = None,
    cache: Path | None = None,
    relearn: Sequence[Relearning] = (),
    kernels: bool = False,
    device_map: str | None = None,
    calibrations: Mapping[str, Calibration] | None = None,
) -> None:
    """Fill every missing cell of `results`; the retrain model goes first (PrivLeak's reference).

    `calibration` feeds GPTQ/AWQ (the recipe's calibration section), `calibrations` by source the
    columns whose name fixes theirs (`gptq-w4-g128@forget`); `cache` (default: beside the results)
    holds quantized models.
    Each of `relearn` is one more column after the quantizers: the model relearned, at full precision.
    `kernels`: cells of quantizers with a real-kernel backend (`llm_unlearn.kernels`) are evaluated
    with the backend's own layers instead of the dequantized weights. Models are evaluated on this
    process's device (`models.eval_placement`: float32 on the CPU, the checkpoint's dtype on an
    accelerator), or over every visible accelerator with `device_map="auto"`.
    """
    placement = eval_placement(PartialState().device, device_map)
    run_folder = RunFolder(results.path.parent)
    cache = cache or run_folder.quantized_root
    memo = HashMemo(run_folder.hashes)  # cells' stored hashes checked without reading them again
    ordered = sorted(models, key=lambda m: m.name != "retrain")
    columns = len(quantizers) + len(relearn)
    task = progress.add_task("audit", total=len(ordered) * columns) if progress else None
    for model in ordered:
        for column in _columns(quantizers, relearn, calibration, calibrations or {}):
            # a column that changes what only some metrics ask (in-context shots) has no other cells
            pending = [
                m
                for m in metrics
                if column.evaluates(METRICS.get(m))
                and (
                    (recorded := results.get(model.name, model.target, column.name, m)) is None
                    or column.stale(recorded)
                )
            ]
            if progress:
                progress.update(task, description=f"audit {model.name}@{model.target} {column.name}")
            if pending:
                label = f"{model.name}@{model.target}"
                network = column_network(column, model.path, label, run_folder, cache, placement, kernels)
                how = evaluation(column, kernels, next(network.parameters()).dtype)
                _evaluate_cell(model, column, network, pending, ctx, results, how)
                del network  # or it stays alive while the next cell loads: two models at once
            if progress:
                progress.advance(task)
    diagnostics = ResultsFile.shared(run_folder.diagnostics)
    targets = {m.target: m for m in models if m.name == "target"}
    for model in ordered:
        if model.target not in targets or model.name in ("target", "retrain"):
            continue
        for column in _columns(quantizers, relearn, calibration, calibrations or {}):
            done = diagnostics.get(model.name, model.target, column.name, DIAGNOSTICS) is not None
            if column.has_codes and not done:
                if progress:
                    progress.update(task, description=f"diagnose {model.name}@{model.target} {column.name}")
                _diagnose_cell(model, targets[model.target], column, cache, diagnostics, memo)  # type: ignore[arg-type]
    if progress:  # the bar stays on the terminal: what it did, not the last cell it did
        progress.update(task, description=f"audited {len(ordered)} models × {columns} columns")


def _columns(
    quantizers: Sequence[str],
    relearn: Sequence[Relearning],
    calibration: Calibration | None,
    calibrations: Mapping[str, Calibration],
) -> Iterator[Column]:
    """The audit's columns in order, each made afresh for each cell (a quantizer keeps what its
    last quantization wrote): the recipe's `quantize` list by name, then the relearn checks."""
    for name in quantizers:
        yield _column(name, calibration, calibrations)  # GPTQ/AWQ refuse to quantize without it
    yield from relearn


def _column(name: str, calibration: Calibration | None, calibrations: Mapping[str, Calibration]) -> Column:
    """The column `name`, a calibrated one given the recipe section's calibration, or the named
    source's where its name fixes one (`gptq-w4-g128@forget`)."""
    column = get_column(name)
    if column.needs_calibration:
        source = column.calibration_source
        column.calibration = calibration if source is None else calibrations.get(source)  # type: ignore[attr-defined]
    return column


def _cell(cache: Path, model: AuditModel, quantizer: Quantizer) -> Path:
    return cell_folder(cache, f"{model.name}@{model.target}", quantizer.name)


class _ModuleWeights(Mapping[str, torch.Tensor]):
    """A checkpoint's weights by module name, in float32, each read from disk when asked for."""

    def __init__(self, checkpoint: Path) -> None:
        self._tensors = CheckpointTensors(checkpoint)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[f"{name}.weight"].float()

    def __iter__(self) -> Iterator[str]:
        return (key.removesuffix(".weight") for key in self._tensors if key.endswith(".weight"))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _diagnose_cell(
    model: AuditModel,
    target: AuditModel,
    quantizer: Quantizer,
    cache: Path,
    results: ResultsFile,
    memo: HashMemo,
) -> None:
    require_calibration(quantizer)
    cells = _cell(cache, target, quantizer), _cell(cache, model, quantizer)
    found = diagnose_checkpoints(target.path, model.path, quantizer, *cells, memo)
    if not found:  # a quantizer without integer codes has nothing to compare
        return
    results.add(
        {
            "model": model.name,
            "target": model.target,
            "quantizer": quantizer.name,
            "metric": DIAGNOSTICS,
            "checkpoint": str(model.path),
            "quantizer_config": quantizer.config(),
            "agg_value": found["overall"]["bucket_overlap"],
            **found,
        }
    )


def diagnose_checkpoints(
    target: Path,
    unlearned: Path,
    quantizer: Quantizer,
    target_cell: Path,
    unlearned_cell: Path,
    memo: HashMemo | None = None,
) -> dict:
    """`quant.overlap.diagnose` of two checkpoints under `quantizer`, from their cached cells
    (quantized first where missing; checked through `memo` where given). Every tensor is read from
    disk when its layer is diagnosed, so no model is held in memory (a GGUF cell's codes are read
    once from its file, through its model). Empty when the quantizer has no integer codes."""
    codes_t = cached_codes(target, quantizer, target_cell, memo)
    codes_u = cached_codes(unlearned, quantizer, unlearned_cell, memo)
    if not codes_t:
        return {}
    weights_t = weights_u = None
    if quantizer.codes_in_weight_basis:
        weights_t, weights_u = _ModuleWeights(target), _ModuleWeights(unlearned)
    return diagnose(weights_t, weights_u, codes_t, codes_u)


def _evaluate_cell(
    model: AuditModel,
    column: Column,
    network: PreTrainedModel,
    metrics: list[str],
    ctx: EvalContext,
    results: ResultsFile,
    evaluation: str,
) -> None:
    for metric in metrics:
        start = time.perf_counter()
        # a metric with a retrain reference (`Metric.reference`) takes it from the retrain model's
        # full-precision cell, which the audit evaluates first; that cell is its own reference
        reference = METRICS.get(metric).reference
        retrain_fp = results.get("retrain", NO_TARGET, "fp", metric)
        cell_ctx = column.context(ctx)  # what the column changes in what the model is asked
        if reference is not None:
            cell_ctx = reference.given(cell_ctx, None if retrain_fp is None else reference.take(retrain_fp))
        value = evaluate(network, cell_ctx, [metric])[metric]
        if reference is not None and model.name == "retrain" and retrain_fp is None:
            reference.own(value)
            value["ci"] = metric_ci(value, metric=metric)  # the interval of the re-referenced value
        results.add(
            {
                "model": model.name,
                "target": model.target,
                "quantizer": column.name,  # the key results files have always had: old runs read unchanged
                "metric": metric,
                "checkpoint": str(model.path),
                "quantizer_config": column.config(),
                "evaluation": evaluation,
                "seconds": round(time.perf_counter() - start, 2),
                **value,
            }
        )
