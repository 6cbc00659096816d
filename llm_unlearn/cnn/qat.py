"""LSQ fake quantization (Esser et al.) for Conv2d/Linear weights and activations.

    v̂ = round(clip(v/s, −Q_N, Q_P)) · s

signed: Q_N = 2^(b−1), Q_P = 2^(b−1) − 1; unsigned: Q_N = 0, Q_P = 2^b − 1. The backward pass is
the straight-through estimator (∂v̂/∂v = 1 inside the clip range, 0 outside) and the step size's
gradient is scaled by g = 1/√(N·Q_P), N = elements of the weight tensor or, for activations, of
one sample. The step is initialised on the first forward pass as s = 2·mean|v|/√Q_P.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FULL_PRECISION_BITS = 32


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """(Q_N, Q_P): signed (2^(b−1), 2^(b−1)−1), unsigned (0, 2^b−1)."""
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x in the forward pass; gradient × scale in the backward pass."""
    return (x - x * scale).detach() + x * scale


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward; identity gradient backward (straight-through)."""
    return (x.round() - x).detach() + x


def lsq_quantize(v: torch.Tensor, step: torch.Tensor, q_n: int, q_p: int, numel: int) -> torch.Tensor:
    """v̂ = round(clip(v/s, −Q_N, Q_P))·s with STE, and ∂/∂s scaled by 1/√(numel·Q_P).

    s = |step| (floored at 1e-8): an SGD step can carry the learned value through zero, and a
    negative step would flip the sign of every quantized value."""
    s = grad_scale(step.abs().clamp(min=1e-8), 1.0 / math.sqrt(numel * q_p))
    return round_ste((v / s).clamp(-q_n, q_p)) * s


def init_step(v: torch.Tensor, q_p: int) -> torch.Tensor:
    """LSQ's initial step, 2·mean|v|/√Q_P (floored so an all-zero tensor gives a usable step)."""
    return (2 * v.detach().abs().mean() / math.sqrt(q_p)).clamp(min=1e-8)


class LSQQuantizer(nn.Module):
    """One learned step size. `signed=None` (activations) picks the sign from the first batch:
    post-ReLU inputs are non-negative and get the unsigned grid, twice as fine."""

    def __init__(self, bits: int, signed: bool | None, per_sample: bool) -> None:
        super().__init__()
        self.bits = bits
        self.per_sample = per_sample
        self.step = nn.Parameter(torch.ones(()))
        # buffers, so a safetensors checkpoint restores an initialised quantizer
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("signed", torch.tensor(True if signed is None else signed))
        self._auto_sign = signed is None

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            with torch.no_grad():
                if self._auto_sign:
                    self.signed.fill_(bool(v.min() < 0))
                self.step.copy_(init_step(v, self.range[1]))
                self.initialized.fill_(True)
        q_n, q_p = self.range
        numel = v[0].numel() if self.per_sample else v.numel()
        return lsq_quantize(v, self.step, q_n, q_p, numel)

    @property
    def range(self) -> tuple[int, int]:
        return qrange(self.bits, bool(self.signed))

    def codes(self, v: torch.Tensor) -> torch.Tensor:
        """The integer codes round(clip(v/s, −Q_N, Q_P)) that v̂ stands for."""
        q_n, q_p = self.range
        return (v / self.step.abs().clamp(min=1e-8)).clamp(-q_n, q_p).round().to(torch.int32)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_sample={self.per_sample}"


class QConv2d(nn.Conv2d):
    """Conv2d whose weight and input are LSQ fake-quantized."""

    def __init__(self, *args, weight_bits: int = 4, act_bits: int = 4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weight_quant = LSQQuantizer(weight_bits, signed=True, per_sample=False)
        self.act_quant = LSQQuantizer(act_bits, signed=None, per_sample=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.act_quant(x), self.weight_quant(self.weight), self.bias)


class QLinear(nn.Linear):
    """Linear whose weight and input are LSQ fake-quantized."""

    def __init__(self, *args, weight_bits: int = 4, act_bits: int = 4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weight_quant = LSQQuantizer(weight_bits, signed=True, per_sample=False)
        self.act_quant = LSQQuantizer(act_bits, signed=None, per_sample=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.act_quant(x), self.weight_quant(self.weight), self.bias)


def quantize_model(
    model: nn.Module, weight_bits: int = 4, act_bits: int = 4, full_precision_ends: bool = True
) -> nn.Module:
    """Swap every Conv2d/Linear for its LSQ version in place (weights copied); with
    `full_precision_ends` the first conv and the last Linear (the classifier) stay as they are.
    Bits of 32 mean full precision: nothing is swapped."""
    if weight_bits >= FULL_PRECISION_BITS and act_bits >= FULL_PRECISION_BITS:
        return model
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    if full_precision_ends:
        convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
        linears = [n for n, m in layers if isinstance(m, nn.Linear)]
        keep = {convs[0] if convs else None, linears[-1] if linears else None}
        layers = [(n, m) for n, m in layers if n not in keep]
    for name, layer in layers:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, _quantized_copy(layer, weight_bits, act_bits))
    return model


def _quantized_copy(layer: nn.Module, weight_bits: int, act_bits: int) -> nn.Module:
    bits = {"weight_bits": weight_bits, "act_bits": act_bits, "bias": layer.bias is not None}
    if isinstance(layer, nn.Conv2d):
        new: nn.Module = QConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            **bits,
        )
    else:
        new = QLinear(layer.in_features, layer.out_features, **bits)
    new.load_state_dict(layer.state_dict(), strict=False)
    return new


def export_codes(model: nn.Module) -> dict[str, dict[str, torch.Tensor | int]]:
    """Per quantized layer: the integer weight codes, the weight step (v̂ = codes·step), the
    activation step and the bit widths, as a deployment would store them."""
    out: dict[str, dict[str, torch.Tensor | int]] = {}
    for name, layer in model.named_modules():
        if isinstance(layer, QConv2d | QLinear):
            if not layer.weight_quant.initialized:
                raise ValueError(f"{name}: quantizer not initialised; run one forward pass first")
            out[name] = {
                "codes": layer.weight_quant.codes(layer.weight.detach()),
                "weight_step": layer.weight_quant.step.detach().abs(),
                "act_step": layer.act_quant.step.detach().abs(),
                "weight_bits": layer.weight_quant.bits,
                "act_bits": layer.act_quant.bits,
                "act_signed": bool(layer.act_quant.signed),
            }
    return out
