"""HQQ, Half-Quadratic Quantization (`pip install llm-unlearn[hqq]`): `hqq-w4-g64`, `hqq-w8-g64`.

Badri & Shaji (2023), "Half-Quadratic Quantization of Large Machine Learning Models". Calibration-
free: per group of 64 consecutive inputs of a row (hqq's `axis=1`, Hugging Face `HqqConfig`'s
default), codes q in [0, 2^b - 1] and a float scale s and zero point z give

    w' = (q - z) * s

where s and z start from the group's min/max and are then fitted by a few half-quadratic
iterations minimising the sparsity-promoting ‖W - Q_z(W)‖_p (p < 1) over z (hqq's
`optimize_weights_proximal`), so z is a float; at 4 bits its starting point is rounded
(`round_zero`).

The codes and (s, z) are hqq's own, read from `hqq.core.quantize.HQQLinear` built with
`BaseQuantizeConfig(nbits, group_size)` in float32 on CPU; the quantized model computes with
`HQQLinear.dequantize()`, which equals `WeightCodes.dequantize()` of these codes.
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

_NAME = re.compile(r"hqq-w(?P<bits>[48])-g(?P<group>64)")
MISSING = "HQQ quantizers need hqq: pip install 'llm-unlearn[hqq]'"


@register_quantizer("hqq")
class HQQQuantizer(Quantizer):
    """HQQ weight quantization, named `hqq-w{4,8}-g64`."""

    pattern = "hqq-w{4,8}-g64"

    def __init__(self, name: str) -> None:
        match = _NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"malformed HQQ quantizer name {name!r}; expected {self.pattern}")
        self.name = name
        self.bits = int(match["bits"])
        self.group_size = int(match["group"])

    def quantize_model(self, model: nn.Module) -> nn.Module:
        self.quantize_with_codes(model)
        return model

    def quantize_with_codes(self, model: nn.Module) -> dict[str, WeightCodes]:
        quantize = _hqq()
        targets = list(quantization_targets(model))
        for name, module in targets:  # every shape is checked before any weight changes
            if module.weight.numel() % self.group_size:
                raise UserError(f"{self.name} cannot quantize {name}: not whole groups of {self.group_size}")
        codes = {}
        with torch.no_grad():
            for name, module in targets:
                codes[name], weight = hqq_codes(module, self.bits, self.group_size, quantize)
                module.weight.copy_(weight)
        return codes

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "hqq (half-quadratic, calibration-free)",
            "library": _version(),
            "bits": self.bits,
            "group_size": self.group_size,
            "axis": 1,
            "round_zero": self.bits == 4,
            "symmetric": False,
            "skipped": list(SKIPPED),
            "evaluation": "dequantized weights (float32)",
        }


def hqq_codes(
    module: nn.Linear, bits: int, group_size: int, quantize: Any
) -> tuple[WeightCodes, torch.Tensor]:
    """hqq's codes of `module.weight` and the weight `HQQLinear.dequantize()` gives; module unchanged.

    With axis=1 hqq groups the row-major weight into [numel / group_size, group_size], the
    layout of `WeightCodes`; `scale` and `zero` are [groups, 1].
    """
    layer = quantize.HQQLinear(
        module,
        quantize.BaseQuantizeConfig(nbits=bits, group_size=group_size),
        compute_dtype=torch.float32,
        device="cpu",
        del_orig=False,
    )
    meta = layer.meta
    q = quantize.Quantizer.unpack[meta["packing"]](layer.W_q, dtype=torch.uint8)
    groups = module.weight.numel() // group_size
    codes = WeightCodes(
        codes=q.long().reshape(groups, group_size),
        levels=torch.arange(2**bits, dtype=torch.float32),
        scale=meta["scale"].float().reshape(groups),
        zero=meta["zero"].float().reshape(groups),
        shape=module.weight.shape,
    )
    return codes, layer.dequantize().float().reshape(module.weight.shape)


def _hqq() -> Any:
    try:
        import hqq.core.quantize
    except ImportError:
        raise UserError(MISSING) from None
    return hqq.core.quantize


def _version() -> str:
    try:
        return f"hqq {version('hqq')}"
    except PackageNotFoundError:
        raise UserError(MISSING) from None
