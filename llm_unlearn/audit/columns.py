"""How the audit makes each column's product: the model it evaluates in a cell.

Every kind of column (`llm_unlearn.columns`) is registered here with the way its cells are made and
cached; the audit asks `column_network` and holds no branch on a column's kind, family or method:

- a quantizer (`quant.Quantizer`, every family): the checkpoint quantized, cached as codes under
  `quantized/<model>@<target>/<quantizer>/` (`audit/cache.py`); under `evaluate_with: kernels` a
  quantizer that names a real-kernel backend (`Column.kernels`) runs on it (`llm_unlearn.kernels`);
- an in-context probe (`metrics/incontext.py`) is the checkpoint itself at full precision: what it
  changes is the evaluation context (`Column.context`), not the model;
- any other kind makes and caches its own (`network(source, model, run_folder, placement)`): a
  relearn check (`audit/relearn.py`) fine-tunes the checkpoint once into
  `relearned/<model>@<target>/<column>/`.
"""

from __future__ import annotations

from functools import singledispatch
from pathlib import Path
from typing import Any

from torch import nn

from llm_unlearn.audit import relearn  # noqa: F401  registers the relearn kind
from llm_unlearn.audit.cache import cell_folder, ensure_cell, quantized
from llm_unlearn.columns import Column
from llm_unlearn.errors import UserError
from llm_unlearn.filehash import HashMemo
from llm_unlearn.kernels import kernel_model, uses_kernels
from llm_unlearn.metrics.incontext import InContext
from llm_unlearn.models import load_model
from llm_unlearn.quant import Quantizer
from llm_unlearn.runfolder import RunFolder


@singledispatch
def column_network(
    column: Column, source: Path, model: str, run_folder: RunFolder, cache: Path,
    placement: dict[str, Any] | None, kernels: bool,
) -> nn.Module:  # fmt: skip
    """`source` (the checkpoint of `model`, RUN@TARGET) under `column`, made or read from its cache;
    `cache`: the quantized cache's root, `kernels`: the recipe's `evaluate_with: kernels`."""
    return column.network(source, model, run_folder, placement)  # type: ignore[attr-defined]


@column_network.register
def _quantized(
    column: Quantizer, source: Path, model: str, run_folder: RunFolder, cache: Path,
    placement: dict[str, Any] | None, kernels: bool,
) -> nn.Module:  # fmt: skip
    require_calibration(column)
    cell = cell_folder(cache, model, column.name)
    memo = HashMemo(run_folder.hashes)  # a cell's stored hashes checked without reading it again
    if not uses_kernels(column, kernels):
        return quantized(source, column, cell, placement, memo)
    column.check_kernels()  # a missing backend is one line, before quantizing for it
    if column.artifacts_hold_the_model:  # the backend runs the file kept in the cell
        ensure_cell(source, column, cell, memo)
    return kernel_model(source, column, cell)


@column_network.register
def _unchanged(
    column: InContext, source: Path, model: str, run_folder: RunFolder, cache: Path,
    placement: dict[str, Any] | None, kernels: bool,
) -> nn.Module:  # fmt: skip
    return load_model(source, placement=placement)


def require_calibration(quantizer: Quantizer) -> None:
    """GPTQ and AWQ fit their rounding to activations: refuse in one line where no text was given."""
    if quantizer.needs_calibration and quantizer.calibration is None:
        source = quantizer.calibration_source
        where = "set the recipe's calibration section" if source is None else f"give the audit {source} text"
        raise UserError(f"quantize: {quantizer.name} needs calibration text; {where}")
