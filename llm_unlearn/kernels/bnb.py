"""A model evaluated with bitsandbytes' own layers (`pip install llm-unlearn[bnb]`), on CPU.

The audit's `bnb-*` quantizers simulate: the model computes with the dequantized weights in
float32. Here every quantization target (`quant.rtn.quantization_targets`) is replaced by the
layer `BitsAndBytesConfig` loading builds, with its defaults:

- `bnb-nf4`, `bnb-fp4`: `Linear4bit` (blocksize 64, no double quantization), compute dtype
  float32. Its weights are the simulation's; in training mode it multiplies by them in float32
  (the simulation's numbers), but in evaluation mode on a CPU with AVX512-BF16 it repacks them
  and runs a fused kernel in bfloat16 (activations and block scales rounded to 8 bits).
- `bnb-int8`: `Linear8bitLt` (LLM.int8(), Dettmers et al. 2022, threshold 6.0). Besides the int8
  weight, each activation row is rounded to int8 too, x_q = round(127 x / max|x_row|), except the
  input columns holding a value above the threshold, computed in float16:

      y = (x_q W_qᵀ) · max|x_row| · max|w_col| / 127² + x_out W'_outᵀ + b

  This activation rounding, which the simulation leaves out, happens in evaluation mode only
  (in training mode bitsandbytes' CPU path multiplies by the dequantized weight instead).

`with_bnb_kernels` returns the model in evaluation mode, the mode the metrics run in.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from llm_unlearn.errors import UserError
from llm_unlearn.quant.bnb import BLOCKSIZE, MISSING
from llm_unlearn.quant.rtn import quantization_targets

#: BitsAndBytesConfig's `llm_int8_threshold` default
INT8_THRESHOLD = 6.0
_NAME = re.compile(r"bnb-(?P<kind>nf4|fp4|int8)")


def with_bnb_kernels(model: nn.Module, quantizer: str) -> nn.Module:
    """Replace, in place, each target Linear of a float32 `model` by bitsandbytes' layer for
    `quantizer` (`bnb-nf4`, `bnb-fp4` or `bnb-int8`), quantizing its weight; return `model` in
    evaluation mode (module doc)."""
    match = _NAME.fullmatch(quantizer)
    if match is None:
        raise UserError(f"{quantizer!r}: bitsandbytes kernels exist for bnb-nf4, bnb-fp4 and bnb-int8")
    try:
        import bitsandbytes.nn as bnb_nn
    except ImportError:
        raise UserError(MISSING) from None
    for name, linear in list(quantization_targets(model)):
        layer = _layer(bnb_nn, linear, match["kind"])
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    return model.eval()


def _layer(bnb_nn: object, linear: nn.Linear, kind: str) -> nn.Module:
    weight = linear.weight.detach().float().clone()
    has_bias = linear.bias is not None
    if kind == "int8":
        layer = bnb_nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            has_fp16_weights=False,
            threshold=INT8_THRESHOLD,
            device="meta",
        )
        layer.weight = bnb_nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb_nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            compute_dtype=torch.float32,
            quant_type=kind,
            device="meta",
        )
        layer.weight = bnb_nn.Params4bit(
            weight, requires_grad=False, quant_type=kind, blocksize=BLOCKSIZE, compress_statistics=False
        )
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
    return layer.to("cpu")  # moving the parameters to a device is what quantizes them
