"""FP8 weights (`fp8-e4m3`): the OCP E4M3 format with one scale per output channel.

This is the weight half of the FP8 checkpoints that llm-compressor's `FP8_DYNAMIC` scheme and
vLLM ship (Micikevicius et al. 2022, "FP8 Formats for Deep Learning"): per output row i,

    s_i = max_j |w_ij| / 448,    q_ij = e4m3(w_ij / s_i),    w'_ij = q_ij * s_i

where 448 is E4M3's largest finite value and e4m3() rounds to the nearest representable value
(ties to even), which is torch's cast to `torch.float8_e4m3fn`. The activations stay in full
precision here (weight-only, as every quantizer of the audit).

Codes: the index of each weight's 8-bit pattern in the sorted table of the 253 distinct finite
E4M3 values (-0 and +0 are one level; the two NaN patterns never occur), so the bucket-overlap
diagnostics see the format's non-uniform grid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llm_unlearn.quant.registry import Quantizer, WeightCodes, register_quantizer
from llm_unlearn.quant.rtn import SKIPPED, quantization_targets

E4M3_MAX = 448.0


def e4m3_levels() -> torch.Tensor:
    """The distinct finite E4M3 values, increasing (253 of them)."""
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).float()
    return torch.unique(values[torch.isfinite(values)], sorted=True) + 0.0  # + 0.0: -0 becomes 0


def fp8_codes(weight: torch.Tensor) -> WeightCodes:
    """E4M3 codes of a 2-D weight [out, in] with the per-row scale max|w| / 448 (module doc).

    A row of zeros gets the smallest positive float32 scale, so it dequantizes to zeros.
    """
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / E4M3_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    q = (w / scale[:, None]).to(torch.float8_e4m3fn).float()
    levels = e4m3_levels()
    return WeightCodes(
        codes=torch.searchsorted(levels, q),  # q is exactly a level: its index in the table
        levels=levels,
        scale=scale,
        zero=torch.zeros(w.shape[0]),
        shape=w.shape,
    )


@register_quantizer("fp8")
class FP8Quantizer(Quantizer):
    """FP8 E4M3 weights with per-output-channel scales, named `fp8-e4m3`."""

    pattern = "fp8-e4m3"

    def __init__(self, name: str) -> None:
        if name != "fp8-e4m3":
            raise ValueError(f"malformed FP8 quantizer name {name!r}; expected {self.pattern}")
        self.name = name

    def quantize_model(self, model: nn.Module) -> nn.Module:
        self.quantize_with_codes(model)
        return model

    def quantize_with_codes(self, model: nn.Module) -> dict[str, WeightCodes]:
        codes = {}
        with torch.no_grad():
            for name, module in quantization_targets(model):
                codes[name] = fp8_codes(module.weight)
                module.weight.copy_(codes[name].dequantize())
        return codes

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "fp8 e4m3 (torch.float8_e4m3fn), weight-only",
            "bits": 8,
            "group_size": None,
            "scale": "max|w| / 448 per output channel",
            "skipped": list(SKIPPED),
        }
