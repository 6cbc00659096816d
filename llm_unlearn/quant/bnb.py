"""bitsandbytes quantizers (`pip install llm-unlearn[bnb]`): `bnb-nf4`, `bnb-fp4`, `bnb-int8`.

The codes come from `bitsandbytes.functional`, the functions `BitsAndBytesConfig` loading calls:

- NF4 / FP4 (`quantize_4bit`, blocksize 64, no double quantization: BitsAndBytesConfig's
  defaults): the weight, flattened row-major, is cut into blocks of 64; each element becomes a
  4-bit index into a 16-value table T in [-1, 1] (normal-float quantiles for NF4, a tiny float
  format for FP4) and w' = T[code] * absmax(block). Two codes per byte, high nibble first.
- int8 (`int8_vectorwise_quant` of the float16 weight, LLM.int8()'s format): per output row,
  code = round(127 * w / absmax(row)) and w' = code * absmax(row) / 127.

The quantized model is evaluated with these dequantized weights in float32 (weight-only).
bitsandbytes' own CPU modules differ in the arithmetic, not in the weights: `Linear4bit`
multiplies by the same dequantized weight in lower precision, and `Linear8bitLt` also rounds
the activations to int8 per row (LLM.int8()'s other half), which this audit does not simulate.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from torch import nn

from llm_unlearn.errors import UserError
from llm_unlearn.quant.registry import Quantizer, WeightCodes, register_quantizer
from llm_unlearn.quant.rtn import SKIPPED, quantization_targets

BLOCKSIZE = 64
_NAME = re.compile(r"bnb-(?P<kind>nf4|fp4|int8)")


@register_quantizer("bnb")
class BitsAndBytesQuantizer(Quantizer):
    """bitsandbytes weight quantization, named `bnb-nf4`, `bnb-fp4` or `bnb-int8`."""

    pattern = "bnb-{nf4,fp4,int8}"
    kernels = "bitsandbytes"  # evaluate_with: kernels swaps in bitsandbytes' own layers (`kernels/bnb.py`)

    def __init__(self, name: str) -> None:
        match = _NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"malformed bitsandbytes quantizer name {name!r}; expected {self.pattern}")
        self.name = name
        self.kind = match["kind"]

    def quantize_model(self, model: nn.Module) -> nn.Module:
        self.quantize_with_codes(model)
        return model

    def quantize_with_codes(self, model: nn.Module) -> dict[str, WeightCodes]:
        functional = _functional()
        codes = {}
        with torch.no_grad():
            for name, module in quantization_targets(model):
                weight = module.weight.detach().float()
                if self.kind == "int8":
                    codes[name] = int8_codes(weight, functional)
                else:
                    codes[name] = four_bit_codes(weight, self.kind, functional)
                module.weight.copy_(codes[name].dequantize())
        return codes

    def config(self) -> dict[str, Any]:
        four_bit = self.kind != "int8"
        return {
            "name": self.name,
            "method": f"bitsandbytes {self.kind}" + ("" if four_bit else " (LLM.int8() weights)"),
            "library": _version(),
            "bits": 4 if four_bit else 8,
            "group_size": BLOCKSIZE if four_bit else None,
            "symmetric": True,
            "double_quant": False,
            "skipped": list(SKIPPED),
            "evaluation": "dequantized weights (float32)",
        }


def four_bit_codes(weight: torch.Tensor, kind: str, functional: Any) -> WeightCodes:
    """NF4/FP4 codes of a float32 weight as `quantize_4bit` stores them, mapped onto the sorted
    table (FP4 has +0 and -0: both become the one level 0, as they dequantize alike)."""
    if weight.numel() % BLOCKSIZE:
        raise UserError(
            f"bnb-{kind}: a weight of {weight.numel()} elements is not whole blocks of {BLOCKSIZE}"
        )
    packed, state = functional.quantize_4bit(weight, blocksize=BLOCKSIZE, quant_type=kind)
    flat = packed.flatten()
    nibbles = torch.stack([flat >> 4, flat & 0xF], dim=1).flatten()[: weight.numel()].long()
    levels, index = torch.unique(state.code.float(), sorted=True, return_inverse=True)
    groups = weight.numel() // BLOCKSIZE
    return WeightCodes(
        codes=index[nibbles].reshape(groups, BLOCKSIZE),
        levels=levels,
        scale=state.absmax.float().reshape(groups),
        zero=torch.zeros(groups),
        shape=weight.shape,
    )


def int8_codes(weight: torch.Tensor, functional: Any) -> WeightCodes:
    """LLM.int8() codes per row: code = round(127 w / absmax(row)), w' = code * absmax(row) / 127.

    Computed from the float16 weight, as bitsandbytes' `Int8Params` does whatever the model's dtype:
    from float32 about 1 % of the codes (near-ties) would differ from the library's.
    """
    codes, row_absmax, _ = functional.int8_vectorwise_quant(weight.half())
    return WeightCodes(
        codes=codes.long() + 128,
        levels=torch.arange(-128, 128, dtype=torch.float32),
        scale=row_absmax.float() / 127,
        zero=torch.zeros(weight.shape[0]),
        shape=weight.shape,
    )


MISSING = "bitsandbytes quantizers need bitsandbytes: pip install 'llm-unlearn[bnb]'"


def _functional() -> Any:
    try:
        import bitsandbytes.functional
    except ImportError:
        raise UserError(MISSING) from None
    return bitsandbytes.functional


def _version() -> str:
    try:
        return f"bitsandbytes {version('bitsandbytes')}"
    except PackageNotFoundError:
        raise UserError(MISSING) from None
