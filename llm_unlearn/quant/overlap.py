"""Diagnostics without evaluation: how an unlearning update W_u = W_t + Δ fares under a quantizer.

QUAIL's analysis (METHODS.md, "Why quantization can undo unlearning"), per quantized weight and
over the whole model, for target W_t and unlearned W_u with codes c_t, c_u and dequantized
weights Q(W_t), Q(W_u):

- ‖Δ‖ (Frobenius) and max |Δ|;
- Δ / step: mean |Δ| over the local step of the target's grid (the gap between the two grid
  levels around W_t; the scale s for a uniform grid);
- bucket overlap: share of weights with identical codes where both models have the same grid
  (scale and zero point) and identical dequantized values where the grids differ;
- code overlap: share of weights with identical codes, whatever the grids (the quantization-
  failure paper's bucket overlap; reads high even where every group's scale moved);
- crossing: share of weights whose change moves them into another bucket of the target's grid
  (past a rounding threshold, a midpoint between two levels);
- update kept: ⟨Q(W_u) − Q(W_t), Δ⟩ / ‖Δ‖² (1 = quantization keeps the update, 0 = rounds it away);
- grid distance: the target's mean distance to its nearest grid level over the local step
  (0 = on the grid, 0.25 = uniformly inside the buckets; at most 0.5).

A target on the grid loses updates smaller than half a step; one off the grid keeps them on
average. AWQ quantizes rescaled weights W·diag(s), so for it only bucket overlap is computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from llm_unlearn.quant.registry import WeightCodes
from llm_unlearn.quant.rtn import quantization_targets

#: per-weight sums from which every statistic, per layer and overall, is computed
#: statistics that are shares, printed as percentages
_SHARES = ("bucket_overlap", "code_overlap", "crossing", "update_kept")
_SUMS = (
    "n",
    "overlap",
    "same_code",
    "delta_sq",
    "delta_over_step",
    "crossing",
    "kept_inner",
    "grid_distance",
)


def target_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A float32 copy of every weight a quantizer rounds, by module name."""
    return {name: m.weight.detach().float().clone() for name, m in quantization_targets(model)}


def bucket(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the level nearest to each x (rounding thresholds: midpoints between levels)."""
    return torch.bucketize(x, (levels[1:] + levels[:-1]) / 2)


def local_step(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """levels[k+1] − levels[k] for the two levels around each x (the end gaps outside the range)."""
    k = (torch.bucketize(x, levels, right=True) - 1).clamp(0, len(levels) - 2)
    return levels[k + 1] - levels[k]


def grid_distance(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """|x − nearest level| / local step, in [0, 0.5] inside the grid's range."""
    return (x - levels[bucket(x, levels)]).abs() / local_step(x, levels)


def same_grid(a: WeightCodes, b: WeightCodes) -> torch.Tensor:
    """Per group: do both codes use the same levels, scale and zero point?"""
    if not torch.equal(a.levels, b.levels):
        return torch.zeros_like(a.scale, dtype=torch.bool)
    return (a.scale == b.scale) & (a.zero == b.zero)


def weight_sums(
    w_t: torch.Tensor | None, w_u: torch.Tensor | None, c_t: WeightCodes, c_u: WeightCodes
) -> dict[str, float]:
    """The sums of `_SUMS` for one weight; only the overlaps when the weights are not given."""
    q_t, q_u = c_t.dequantize(), c_u.dequantize()
    identical = torch.where(
        same_grid(c_t, c_u)[:, None], c_t.codes == c_u.codes, (q_t == q_u).reshape(c_t.codes.shape)
    )
    sums: dict[str, float] = {
        "n": identical.numel(),
        "overlap": identical.sum().item(),
        "same_code": (c_t.codes == c_u.codes).sum().item(),
    }
    if w_t is None or w_u is None:
        return sums
    delta = (w_u - w_t).float()
    levels = c_t.levels.float()
    x_t, x_u = c_t.normalized(w_t), c_t.normalized(w_u)
    step = local_step(x_t, levels) * c_t.scale.float()[:, None]
    sums.update(
        delta_sq=delta.square().sum().item(),
        max_abs_delta=delta.abs().max().item(),
        delta_over_step=(delta.reshape(step.shape).abs() / step).sum().item(),
        crossing=(bucket(x_t, levels) != bucket(x_u, levels)).sum().item(),
        kept_inner=((q_u - q_t) * delta).sum().item(),
        grid_distance=grid_distance(x_t, levels).sum().item(),
    )
    return sums


def statistics(sums: Mapping[str, float]) -> dict[str, float | None]:
    """Sums -> the reported statistics (module doc); None where they are not defined."""
    n = sums["n"]
    out: dict[str, float | None] = {
        "weights": n,
        "bucket_overlap": sums["overlap"] / n,
        "code_overlap": sums["same_code"] / n,
    }
    if "delta_sq" not in sums:
        return out
    out.update(
        delta_norm=sums["delta_sq"] ** 0.5,
        max_abs_delta=sums["max_abs_delta"],
        delta_over_step=sums["delta_over_step"] / n,
        crossing=sums["crossing"] / n,
        update_kept=sums["kept_inner"] / sums["delta_sq"] if sums["delta_sq"] > 0 else None,
        grid_distance=sums["grid_distance"] / n,
    )
    return out


def diagnose(
    weights_t: Mapping[str, torch.Tensor] | None,
    weights_u: Mapping[str, torch.Tensor] | None,
    codes_t: Mapping[str, WeightCodes],
    codes_u: Mapping[str, WeightCodes],
) -> dict[str, Any]:
    """{"layers": {name: statistics}, "overall": statistics} of an unlearned model against its
    target under one quantizer. Weights None (AWQ): bucket overlap only."""
    layers, total = {}, dict.fromkeys(_SUMS, 0.0)
    total["max_abs_delta"] = 0.0
    for name, c_t in codes_t.items():
        w_t = weights_t[name] if weights_t is not None else None
        w_u = weights_u[name] if weights_u is not None else None
        sums = weight_sums(w_t, w_u, c_t, codes_u[name])
        layers[name] = statistics(sums)
        for key, value in sums.items():
            total[key] = max(total[key], value) if key == "max_abs_delta" else total[key] + value
    if weights_t is None:
        total = {key: total[key] for key in ("n", "overlap", "same_code")}
    return {"layers": layers, "overall": statistics(total)}


def format_table(diagnostics: Mapping[str, Any]) -> str:
    """A plain-text table: one row per layer and one for the whole model."""
    columns = ("bucket_overlap", "code_overlap", "crossing", "update_kept", "delta_norm", "max_abs_delta")
    columns += ("delta_over_step", "grid_distance")
    rows = [*diagnostics["layers"].items(), ("overall", diagnostics["overall"])]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'layer':<{width}}  " + "  ".join(f"{c:>15}" for c in columns)]
    for name, stats in rows:
        cells = [_cell(stats.get(c), percent=c in _SHARES) for c in columns]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def _cell(value: float | None, percent: bool) -> str:
    if value is None:
        return "–"
    return f"{value:.3%}" if percent else f"{value:.4g}"
