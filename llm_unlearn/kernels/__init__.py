"""Evaluation with a backend's own inference instead of dequantized weights.

A recipe's `evaluate_with: kernels` evaluates each cell whose column names a backend registered here
(`Column.kernels`) through the same metric code as a simulated cell:

- `bitsandbytes` (`bnb-*`, `kernels/bnb.py`): the model with bitsandbytes' own `Linear4bit` /
  `Linear8bitLt` layers in place of its Linears (LLM.int8() also rounds the activations to int8);
- `llama.cpp` (`gguf-*`, `kernels/llamacpp.py`): the GGUF file llama.cpp wrote, kept in the cell, run
  by llama.cpp itself (llama-cpp-python's `Llama`, fed our token ids): its quantized matmuls round
  the activations to 8-bit blocks and its key/value cache holds float16.

Every other column's cell is the dequantized model, which for RTN, GPTQ's and AWQ's W4A16, HQQ
and FP8 weights is what their weight-only kernels compute up to the matmul's rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llm_unlearn.columns import Column
from llm_unlearn.models import load_model
from llm_unlearn.quant import Quantizer, get_quantizer
from llm_unlearn.registry import Registry


@dataclass(frozen=True)
class Backend:
    #: how its cells are computed (a results line's `evaluation`)
    description: str
    #: (checkpoint, quantizer, cell) -> the model run by the backend's own inference
    model: Callable[[Path, Quantizer, Path], nn.Module]


BACKENDS: Registry[Backend] = Registry("kernel backend")


def _bnb(checkpoint: Path, quantizer: Quantizer, cell: Path) -> nn.Module:
    from llm_unlearn.kernels.bnb import with_bnb_kernels  # bitsandbytes is optional

    return with_bnb_kernels(load_model(checkpoint), quantizer.name)


def _llama_cpp(checkpoint: Path, quantizer: Quantizer, cell: Path) -> nn.Module:
    from llm_unlearn.kernels.llamacpp import llama_cpp_model  # llama-cpp-python is optional

    return llama_cpp_model(checkpoint, quantizer, cell)


BACKENDS.register("bitsandbytes")(
    Backend("kernels: bitsandbytes' own Linear4bit / Linear8bitLt layers", _bnb)
)
BACKENDS.register("llama.cpp")(Backend("kernels: llama.cpp's own inference (llama-cpp-python)", _llama_cpp))


def kernel_model(checkpoint: Path, quantizer: Quantizer, cell: Path) -> nn.Module:
    """The model at `checkpoint` under `quantizer`, run by its backend's own inference; `cell` is
    its folder in the audit's quantized cache, already written where the backend runs the file the
    quantizer kept there (`Quantizer.artifacts_hold_the_model`: llama.cpp's for `gguf-*`)."""
    return _backend(quantizer).model(checkpoint, quantizer, cell)


def _column(column: Column | str) -> Column:
    return get_quantizer(column) if isinstance(column, str) else column


def _backend(column: Column) -> Backend:
    assert column.kernels is not None, f"{column.name} has no real-kernel backend"
    return BACKENDS.get(column.kernels)


def uses_kernels(column: Column | str, kernels: bool) -> bool:
    """Whether a cell of `column` (or a quantizer's name) runs on a backend's own inference when the
    recipe asks for `kernels`."""
    return kernels and _column(column).kernels is not None


def evaluation(column: Column | str, kernels: bool, dtype: torch.dtype = torch.float32) -> str:
    """What a cell's results line says about how it was computed (its `evaluation` field);
    `dtype`: the evaluated model's (float32 on the CPU, the checkpoint's on an accelerator)."""
    column = _column(column)
    name = str(dtype).removeprefix("torch.")
    if column.at_full_precision:
        return f"full precision ({name})"
    if uses_kernels(column, kernels):
        return _backend(column).description
    return f"simulated: dequantized weights in {name}"


def backend_description(column: Column | str) -> str:
    """How `evaluate_with: kernels` computes a cell of `column`."""
    return _backend(_column(column)).description
