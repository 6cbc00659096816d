"""SURE: which modules train, chosen by the saliency of the forget loss at θ₀.

Saliency of a module (the weight matrix of an `nn.Linear` or `nn.Embedding`) is the L2 norm
of the forget-loss gradient accumulated over the whole forget set at θ₀:

    s_m = ‖ Σ_batches ∇_{W_m} L_forget(θ₀; x_f) ‖₂

Modules with s_m at or above the γ-th percentile of all s (γ = 90 by default) are trained with
a larger learning rate; every other parameter (the remaining matrices, norms, biases) is frozen:
`requires_grad=False`, so it gets no gradient, no optimizer state and no weight decay, and stays
bit-for-bit unchanged. (Zhang et al., arXiv 2410.16454, section 6.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn


def weight_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every Linear / Embedding by parameter name; a tied weight is listed once."""
    seen: set[int] = set()
    out = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            out[f"{module_name}.weight" if module_name else "weight"] = module.weight
    return out


def module_saliency(model: nn.Module, losses: Iterable[torch.Tensor]) -> dict[str, float]:
    """s_m for every weight matrix; `losses` yields the forget loss of each batch at θ₀.

    Each loss is back-propagated as it comes, so gradients accumulate in `.grad` without
    holding more than one batch's graph; the gradients are cleared afterwards.
    """
    model.zero_grad(set_to_none=True)
    for loss in losses:
        loss.backward()
    matrices = weight_matrices(model)
    saliency = {
        name: (p.grad.float().norm().item() if p.grad is not None else 0.0) for name, p in matrices.items()
    }
    model.zero_grad(set_to_none=True)
    return saliency


def salient_modules(saliency: dict[str, float], percentile: float) -> list[str]:
    """Names with saliency at or above the `percentile`-th percentile (numpy's linear rule)."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    threshold = np.percentile(list(saliency.values()), percentile)
    return [name for name, value in saliency.items() if value >= threshold]


def train_only(model: nn.Module, names: Iterable[str]) -> dict[str, Any]:
    """Freeze every parameter but `names`; returns what a report shows about the choice."""
    names = set(names)
    params = dict(model.named_parameters())
    unknown = names - params.keys()
    if unknown:
        raise ValueError(f"no parameters named {sorted(unknown)}")
    for name, p in params.items():
        p.requires_grad_(name in names)
    total = sum(p.numel() for p in params.values())
    trained = sum(params[name].numel() for name in names)
    return {"modules": sorted(names), "count": len(names), "param_share": trained / total}
