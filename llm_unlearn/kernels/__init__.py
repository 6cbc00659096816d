"""Evaluation with a backend's own quantized layers instead of dequantized weights (`kernels/bnb.py`).

A recipe's `evaluate_with: kernels` evaluates each cell whose quantizer has such a backend here
(bitsandbytes' `bnb-*`); every other quantizer's cell is the dequantized model, which for RTN,
GPTQ's and AWQ's W4A16, HQQ and FP8 weights is what their weight-only kernels compute up to the
matmul's rounding. llama.cpp's inference for `gguf-*` cells is not wired yet: refused in one line.
"""

from __future__ import annotations

from torch import nn

#: quantizer families whose cells have a real-kernel evaluation here
KERNEL_FAMILIES = ("bnb",)
#: families that have kernels elsewhere but not yet here (a recipe asking for them is refused)
UNSUPPORTED_FAMILIES = ("gguf",)


def family(quantizer: str) -> str:
    return quantizer.split("-", 1)[0]


def kernel_model(model: nn.Module, quantizer: str) -> nn.Module:
    """`model` (float32, unquantized) turned into the backend's own quantized layers for `quantizer`."""
    from llm_unlearn.kernels.bnb import with_bnb_kernels

    return with_bnb_kernels(model, quantizer)


def uses_kernels(quantizer: str, kernels: bool) -> bool:
    """Whether a cell of `quantizer` runs on a backend's own layers when the recipe asks for `kernels`."""
    return kernels and family(quantizer) in KERNEL_FAMILIES


def evaluation(quantizer: str, kernels: bool) -> str:
    """What a cell's results line says about how it was computed (its `evaluation` field)."""
    if quantizer == "fp":
        return "full precision (float32)"
    if uses_kernels(quantizer, kernels):
        return "kernels: bitsandbytes' own Linear4bit / Linear8bitLt layers"
    return "simulated: dequantized weights in float32"
