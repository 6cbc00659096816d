"""Evaluation with a backend's own inference instead of dequantized weights.

A recipe's `evaluate_with: kernels` evaluates each cell whose quantizer family has a backend here
through the same metric code as a simulated cell:

- `bnb-*` (`kernels/bnb.py`): the model with bitsandbytes' own `Linear4bit` / `Linear8bitLt`
  layers in place of its Linears (LLM.int8() also rounds the activations to int8);
- `gguf-*` (`kernels/llamacpp.py`): the GGUF file llama.cpp wrote, kept in the cell, run by
  llama.cpp itself (llama-cpp-python's `Llama`, fed our token ids): its quantized matmuls round
  the activations to 8-bit blocks and its key/value cache holds float16.

Every other quantizer's cell is the dequantized model, which for RTN, GPTQ's and AWQ's W4A16, HQQ
and FP8 weights is what their weight-only kernels compute up to the matmul's rounding.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llm_unlearn.models import load_model
from llm_unlearn.quant import Quantizer, family

#: quantizer family -> how its cells are computed with `kernels` (a result line's `evaluation`)
KERNELS = {
    "bnb": "kernels: bitsandbytes' own Linear4bit / Linear8bitLt layers",
    "gguf": "kernels: llama.cpp's own inference (llama-cpp-python)",
}


def kernel_model(checkpoint: Path, quantizer: Quantizer, cell: Path) -> nn.Module:
    """The model at `checkpoint` under `quantizer`, run by the backend's own inference; `cell` is
    its folder in the audit's quantized cache, already written where the backend runs the file the
    quantizer kept there (`Quantizer.artifacts_hold_the_model`: llama.cpp's for `gguf-*`)."""
    if family(quantizer.name) == "gguf":
        from llm_unlearn.kernels.llamacpp import llama_cpp_model

        return llama_cpp_model(checkpoint, quantizer, cell)
    from llm_unlearn.kernels.bnb import with_bnb_kernels

    return with_bnb_kernels(load_model(checkpoint), quantizer.name)


def uses_kernels(quantizer: str, kernels: bool) -> bool:
    """Whether a cell of `quantizer` runs on a backend's own inference when the recipe asks for `kernels`."""
    return kernels and family(quantizer) in KERNELS


def evaluation(quantizer: str, kernels: bool, dtype: torch.dtype = torch.float32) -> str:
    """What a cell's results line says about how it was computed (its `evaluation` field);
    `dtype`: the evaluated model's (float32 on the CPU, the checkpoint's on an accelerator)."""
    name = str(dtype).removeprefix("torch.")
    if quantizer == "fp":
        return f"full precision ({name})"
    if uses_kernels(quantizer, kernels):
        return KERNELS[family(quantizer)]
    return f"simulated: dequantized weights in {name}"
