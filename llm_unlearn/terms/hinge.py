"""QUAIL's logit-space hinge ("QUAIL: Quantization Aware Unlearning for Mitigating Misinformation in
LLMs"), a regulariser on the forget set that a recipe's `quail:` entry adds to any method."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from llm_unlearn.terms.base import Params, Reference, Term, TermInput, masked_mean, register_term, shifted

HINGE_DISTANCES = ("mean_abs", "l2", "linf")


def quail_hinge(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    distance: str = "mean_abs",
) -> torch.Tensor:
    """QUAIL's logit-space hinge: L = mean over forget label positions of relu(m − d(z_θ, z_θ₀)).

    d per position over the vocabulary: `mean_abs` = mean |z − z₀| (the paper's default),
    `l2` = ‖z − z₀‖₂, `linf` = max |z − z₀|. The term is zero once every position is at least
    m away from the reference, so it only acts where unlearning moved the logits too little
    to survive rounding. At θ = θ₀ (d = 0) its gradient is 0: the forget term must move θ
    first. m is in logit units (see `QuailSettings.margin`, modifiers/quail.py, for how `auto` sets it).
    """
    if distance not in HINGE_DISTANCES:
        raise ValueError(f"distance must be one of {HINGE_DISTANCES}, got {distance!r}")
    logits, _, mask = shifted(logits, labels)
    diff = logits - ref_logits[:, :-1, :].float()
    if distance == "mean_abs":
        d = diff.abs().mean(dim=-1)
    elif distance == "l2":
        d = torch.linalg.vector_norm(diff, dim=-1)
    else:
        d = diff.abs().amax(dim=-1)
    return masked_mean(F.relu(margin - d), mask)


class HingeParams(Params):
    margin: float = Field(default=0.0, ge=0, description="m in logit units.")
    distance: Literal["mean_abs", "l2", "linf"] = Field(
        default="mean_abs", description="Distance over the vocabulary."
    )


@register_term("hinge")
class QuailHinge(Term):
    part = "forget"
    params = HingeParams
    regulariser = True
    description = "QUAIL's logit-space hinge on the forget set"

    def reference(self, p: HingeParams) -> Reference:
        return "logits"

    def __call__(self, inputs: Mapping[str, TermInput], p: HingeParams) -> torch.Tensor:
        x = inputs["text"]
        return quail_hinge(x.logits, x.ref_logits, x.labels, p.margin, p.distance)
