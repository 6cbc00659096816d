"""OEU's orthogonal gradient projection, shared by the LLM trainer and the CNN track.

Two backward passes give the forget gradient g_f and the retain gradient g_r. Per layer
(one parameter tensor), with ĝ = g / max(‖g‖, ε):

    p = ĝ_f − α · ⟨ĝ_f, ĝ_r⟩ · ĝ_r,   rescaled so that ‖p‖ = ‖g_f‖,

and the update direction is p + g_r. With α = 1, ⟨p, g_r⟩ = 0: the forget step no longer moves
the retain loss to first order. The rescaling changes the direction of the layer's forget step,
not its size. `scope="global"` projects once over all parameters flattened together (the paper's
ablation); `"layer"` is the method.

Gradients are lists aligned with the parameter list; None means "no gradient for this
parameter" and counts as zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

Scope = Literal["layer", "global"]
SCOPES: tuple[Scope, ...] = ("layer", "global")
PARALLEL_TOL = 1e-6


def _project_flat(g_f: torch.Tensor, g_r: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """p for one flat pair, in float32 (the formula of the module docstring)."""
    norm_f = g_f.norm()
    u_f = g_f / norm_f.clamp(min=eps)
    u_r = g_r / g_r.norm().clamp(min=eps)
    p = u_f - alpha * torch.dot(u_f, u_r) * u_r
    norm_p = p.norm()
    # p is built from unit vectors: g_f parallel to g_r with α = 1 leaves only float32 rounding
    # noise (~1e-7), which the rescaling would blow up to the size of the forget step.
    if norm_p <= PARALLEL_TOL:
        return torch.zeros_like(p)
    return p * (norm_f / norm_p)


def project(
    forget_grads: Sequence[torch.Tensor | None],
    retain_grads: Sequence[torch.Tensor | None],
    alpha: float = 1.0,
    scope: Scope = "layer",
    eps: float = 1e-12,
) -> list[torch.Tensor | None]:
    """The projected forget gradient p per parameter (None where g_f is None)."""
    if len(forget_grads) != len(retain_grads):
        raise ValueError(f"{len(forget_grads)} forget gradients but {len(retain_grads)} retain gradients")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    pairs = [
        (g_f, g_r if g_r is not None else torch.zeros_like(g_f)) if g_f is not None else None
        for g_f, g_r in zip(forget_grads, retain_grads, strict=True)
    ]
    if scope == "layer":
        return [
            None
            if pair is None
            else _project_flat(pair[0].flatten().float(), pair[1].flatten().float(), alpha, eps)
            .view_as(pair[0])
            .to(pair[0].dtype)
            for pair in pairs
        ]
    present = [pair for pair in pairs if pair is not None]
    if not present:
        return [None] * len(pairs)
    flat = _project_flat(
        torch.cat([g_f.flatten().float() for g_f, _ in present]),
        torch.cat([g_r.flatten().float() for _, g_r in present]),
        alpha,
        eps,
    )
    out: list[torch.Tensor | None] = []
    offset = 0
    for pair in pairs:
        if pair is None:
            out.append(None)
            continue
        size = pair[0].numel()
        out.append(flat[offset : offset + size].view_as(pair[0]).to(pair[0].dtype))
        offset += size
    return out


def combine(
    forget_grads: Sequence[torch.Tensor | None],
    retain_grads: Sequence[torch.Tensor | None],
    alpha: float = 1.0,
    scope: Scope = "layer",
    eps: float = 1e-12,
) -> list[torch.Tensor | None]:
    """OEU's update direction per parameter: project(g_f, g_r) + g_r (None where both are None)."""
    return add_retain(project(forget_grads, retain_grads, alpha, scope, eps), retain_grads)


def add_retain(
    projected: Sequence[torch.Tensor | None], retain_grads: Sequence[torch.Tensor | None]
) -> list[torch.Tensor | None]:
    """p + g_r per parameter (None where both are None): `combine` for a caller that keeps p."""
    return [
        g_r if p is None else (p if g_r is None else p + g_r)
        for p, g_r in zip(projected, retain_grads, strict=True)
    ]
