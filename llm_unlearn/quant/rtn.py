"""Round-to-nearest (RTN) weight quantization, and the full-precision baseline `fp`.

RTN is the simplest post-training quantizer: every weight is rounded to the nearest point of a
uniform grid whose step comes from the min/max of its group. It needs no calibration data, so a
result under RTN depends on the weights alone, which makes it the reference quantizer of the audit.

Grid (b bits, one group of weights w, computed in float32):

- asymmetric, codes q in [0, 2^b - 1]:
  lo = min(min w, 0), hi = max(max w, 0), s = (hi - lo) / (2^b - 1), z = round(-lo / s),
  q = clamp(round(w / s) + z, 0, 2^b - 1), dequantized w' = (q - z) * s.
  Like GPTQ, the range always contains 0, so 0 is exactly on the grid (z is the code of 0).
- min-offset (`-min`), codes q in [0, 2^b - 1]: lo = min w, hi = max w, s = (hi - lo) / (2^b - 1),
  q = clamp(round((w - lo) / s), 0, 2^b - 1), w' = q * s + lo, stored as the float zero point
  z = -lo / s. This is llama.cpp's Q4_1 / Q5_1 grid (a float minimum per block of 32), so a
  model released as such a GGUF file is a target already on this grid.
- symmetric, codes q in [-2^(b-1), 2^(b-1) - 1]:
  s = max|w| / (2^(b-1) - 1), q = clamp(round(w / s), -2^(b-1), 2^(b-1) - 1), w' = q * s.
  Max-abs scaling never produces the most negative code -2^(b-1) (|w| / s <= 2^(b-1) - 1), as in
  AWQ's symmetric mode. GPTQ's `sym=True` differs: s = 2 max|w| / (2^b - 1) with zero point 2^(b-1).

A group is a row of the weight [out, in] (per output channel) or `group_size` contiguous inputs
of a row. For w' = dequantize(quantize(w)), quantize(w') gives the same codes and w' again up to
float32 rounding: the grid of w' is the grid of w because its codes reach the range ends (see
`quantize_tensor`). This is what makes a "grid-aligned" target exist in the audit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llm_unlearn.errors import UserError
from llm_unlearn.quant.registry import Quantizer, WeightCodes, register_quantizer

#: what `quantize_model` leaves in full precision (stored in every RTN config)
SKIPPED = ("lm_head", "output embeddings", "Linear weights tied to an nn.Embedding")


@dataclass(eq=False)  # tensors have no single truth value to compare by
class QuantizedTensor:
    """Integer codes of a 2-D weight and the per-group grids that map them back to floats.

    `codes` has the weight's shape (uint8 asymmetric, int8 symmetric); `scale` and `zero` have
    shape [rows, groups per row] (one group per row when `group_size` is None); `zero` is None
    for symmetric grids, an integer code (uint8) for the integer-zero asymmetric grid and a float
    (float32) for the min-offset one. Element (i, j) belongs to group j // group_size of row i.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    bits: int
    group_size: int | None
    symmetric: bool
    shape: torch.Size


def check_group_size(shape: torch.Size | tuple[int, ...], group_size: int | None) -> None:
    """Raise ValueError unless `shape` is a 2-D weight [out, in] whose `in` divides into groups."""
    if len(shape) != 2:
        raise ValueError(f"RTN quantizes 2-D weights [out, in]; got shape {tuple(shape)}")
    if group_size is not None and group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    if group_size is not None and shape[1] % group_size:
        raise ValueError(
            f"weight of shape {tuple(shape)}: input dim {shape[1]} is not a multiple of {group_size}"
        )


def quantize_tensor(
    w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool, min_offset: bool = False
) -> QuantizedTensor:
    """Round `w` [out, in] to the nearest point of its group's min/max grid (formulas: module doc).

    Computed in float32 whatever the input dtype. A group of zeros gets the smallest positive
    float32 scale, so its codes dequantize exactly to 0.

    Asymmetric: the group's `hi` gets code 2^b - 1 and its `lo` code 0. `round` already gives
    that except at a tie (-lo / s within float error of a half-integer, where the two candidate
    codes are equally near); pinning the ends keeps the error <= s/2 and guarantees that the codes
    reach both range ends, so dequantized weights reproduce the same s and z when quantized again.
    `min_offset` (asymmetric only) puts `lo` itself, not the nearest integer zero point, at code 0.
    """
    if min_offset and symmetric:
        raise ValueError("min_offset is an asymmetric grid; pass symmetric=False")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    check_group_size(w.shape, group_size)
    if not torch.isfinite(w).all():
        raise ValueError("cannot quantize a weight with inf or NaN entries")
    rows, cols = w.shape
    g = group_size or cols
    x = w.detach().float().reshape(rows, cols // g, g)
    tiny = torch.finfo(torch.float32).tiny
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (x.abs().amax(dim=-1, keepdim=True) / qmax).clamp_min(tiny)
        codes = torch.clamp(torch.round(x / scale), -qmax - 1, qmax).to(torch.int8)
        zero = None
    elif min_offset:
        qmax = 2**bits - 1
        lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
        # a constant group (hi == lo) needs a step that keeps z = -lo / s finite
        scale = ((hi - lo) / qmax).clamp_min(tiny).maximum(lo.abs() * torch.finfo(torch.float32).eps)
        q = torch.clamp(torch.round((x - lo) / scale), 0, qmax)
        q = torch.where(x == lo, 0, torch.where(x == hi, qmax, q))
        codes = q.to(torch.uint8)
        zero = (-lo / scale).squeeze(-1)
    else:
        qmax = 2**bits - 1
        lo = x.amin(dim=-1, keepdim=True).clamp_max(0)
        hi = x.amax(dim=-1, keepdim=True).clamp_min(0)
        scale = ((hi - lo) / qmax).clamp_min(tiny)
        zero_f = torch.round(-lo / scale)
        q = torch.clamp(torch.round(x / scale) + zero_f, 0, qmax)
        # `lo` is tested last so that a group of zeros (lo == hi == 0, z = 0) gets code 0
        q = torch.where(x == lo, 0, torch.where(x == hi, qmax, q))
        codes = q.to(torch.uint8)
        zero = zero_f.squeeze(-1).to(torch.uint8)
    return QuantizedTensor(
        codes=codes.reshape(rows, cols),
        scale=scale.squeeze(-1),
        zero=zero,
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
        shape=w.shape,
    )


def dequantize_tensor(q: QuantizedTensor) -> torch.Tensor:
    """The float32 weight the codes stand for: (codes - zero) * scale, per group, in `q.shape`."""
    rows, cols = q.shape
    g = q.group_size or cols
    codes = q.codes.float().reshape(rows, cols // g, g)
    if q.zero is not None:
        codes = codes - q.zero.float().unsqueeze(-1)
    return (codes * q.scale.unsqueeze(-1)).reshape(q.shape)


def quantization_targets(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """The `nn.Linear` modules weight-only PTQ quantizes: all but the output head.

    Skipped (kept in full precision, as GPTQ, AWQ and bitsandbytes do by default): any module
    named `lm_head`, the module `model.get_output_embeddings()` returns, and any Linear whose
    weight shares storage with an `nn.Embedding` (a tied head). Embeddings and norms are not
    Linear, so they are never touched.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    embeddings = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    # on the meta device (shape checks before a run) every tensor's data_ptr is 0: compare objects
    embedding_ptrs = {w.data_ptr() for w in embeddings if not w.is_meta}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is head or name.split(".")[-1] == "lm_head":
            continue
        if any(module.weight is w for w in embeddings) or (
            not module.weight.is_meta and module.weight.data_ptr() in embedding_ptrs
        ):
            continue
        yield name, module


_RTN_NAME = re.compile(r"rtn-w(?P<bits>[2348])(?:-g(?P<group>32|64|128))?(?P<asym>-asym|-min)?")


@register_quantizer("rtn")
class RTNQuantizer(Quantizer):
    """RTN weight-only quantization, named `rtn-w{bits}[-g{group}][-asym|-min]`.

    `rtn-w4` is 4-bit symmetric per output channel; `-g128` uses groups of 128 inputs; `-asym`
    selects a min/max grid with an integer zero point (GPTQ's and AWQ's default) instead of the
    symmetric max-abs grid; `-min` the min/max grid offset by the float minimum (llama.cpp's
    Q4_1 is `rtn-w4-g32-min`).
    """

    pattern = "rtn-w{2,3,4,8}[-g{32,64,128}][-asym|-min]"
    has_mean_step = True

    def __init__(self, name: str) -> None:
        match = _RTN_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"malformed RTN quantizer name {name!r}; expected {self.pattern}")
        self.name = name
        self.bits = int(match["bits"])
        self.group_size = int(match["group"]) if match["group"] else None
        self.symmetric = match["asym"] is None
        self.min_offset = match["asym"] == "-min"

    def quantize_weights(self, model: nn.Module) -> dict[str, QuantizedTensor]:
        """Codes and grids of every quantized Linear weight, by module name; the model is unchanged."""
        return {name: q for name, _, q in self._quantized(model)}

    def mean_step(self, model: nn.Module) -> float:
        """The grid step s averaged over every group of every quantized weight (QUAIL's `auto`
        margin is half of it)."""
        scales = [q.scale.flatten() for q in self.quantize_weights(model).values()]
        return torch.cat(scales).mean().item()

    def quantize_with_codes(self, model: nn.Module) -> dict[str, WeightCodes]:
        """`quantize_model`, returning each weight's codes (`rtn_codes`, packed): in one pass, so a
        weight's integer codes are dropped as soon as it is replaced."""
        codes = {}
        with torch.no_grad():
            for name, module, q in self._quantized(model):
                codes[name] = rtn_codes(q)
                module.weight.copy_(dequantize_tensor(q))
        return codes

    def quantize_model(self, model: nn.Module) -> nn.Module:
        """Replace each target Linear weight by its dequantized RTN weight, in place; return `model`.

        Weight-only: biases, embeddings, norms and the output head (see `quantization_targets`)
        keep their values. The float32 grid values are cast back to the weight's dtype, so in
        bfloat16 (8 significant bits) 8-bit grid points are themselves rounded; load models in
        float32 or float16 where exact grid values matter.
        """
        self.quantize_with_codes(model)
        return model

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "rtn",
            "bits": self.bits,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "zero_point": "none" if self.symmetric else "float" if self.min_offset else "integer",
            "skipped": list(SKIPPED),
        }

    def check_model(self, model: nn.Module) -> None:
        for name, module in quantization_targets(model):
            try:
                check_group_size(module.weight.shape, self.group_size)
            except ValueError as err:  # the user chose this quantizer for this model: say what to change
                message = f"{self.name} cannot quantize {name}: {err}; choose another group size"
                raise UserError(message) from None

    def _quantized(self, model: nn.Module) -> Iterator[tuple[str, nn.Linear, QuantizedTensor]]:
        # check every shape before quantizing anything, so a bad group size leaves the model untouched
        self.check_model(model)
        for name, module in quantization_targets(model):
            q = quantize_tensor(module.weight, self.bits, self.group_size, self.symmetric, self.min_offset)
            yield name, module, q


# The full-precision baseline lives here until quant/ grows a module for it; it shares the registry.
@register_quantizer("fp")
class FullPrecision(Quantizer):
    """No quantization: the `fp` column of the audit, so every model is evaluated through one path."""

    pattern = "fp"
    has_codes = False
    at_full_precision = True  # its cells are the checkpoint itself: nothing to cache

    def __init__(self, name: str) -> None:
        if name != "fp":
            raise ValueError(f"malformed quantizer name {name!r}; expected {self.pattern}")
        self.name = name

    def quantize_model(self, model: nn.Module) -> nn.Module:
        return model

    def config(self) -> dict[str, Any]:
        return {"name": "fp", "method": "none"}


def rtn_codes(q: QuantizedTensor) -> WeightCodes:
    """RTN's codes as `WeightCodes`: symmetric code c is level c (index c + 2^(b-1)), zero 0;
    asymmetric code q is level q with zero point z."""
    rows, cols = q.shape
    groups = rows * (cols // (q.group_size or cols))
    if q.symmetric:
        low = -(2 ** (q.bits - 1))
        codes, levels, zero = q.codes.long() - low, torch.arange(low, -low), torch.zeros(groups)
    else:
        codes, levels, zero = q.codes.long(), torch.arange(2**q.bits), q.zero.float().reshape(groups)
    return WeightCodes(
        codes=codes.reshape(groups, -1),
        levels=levels.float(),
        scale=q.scale.float().reshape(groups),
        zero=zero,
        shape=q.shape,
    )
