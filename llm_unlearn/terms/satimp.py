"""SatImp: saturation × importance token reweighting (Yang et al. 2025, "Exploring Criteria of Loss
Reweighting to Enhance LLM Unlearning", arXiv 2505.11953)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from llm_unlearn.terms.base import Params, Term, TermInput, masked_mean, register_term, token_nll


def satimp(
    logits: torch.Tensor, labels: torch.Tensor, beta1: float = 5.0, beta2: float = 1.0
) -> torch.Tensor:
    """SatImp: gradient ascent with each forget token weighted by p^β₁ · (1 − p)^β₂.

    L = −mean_t sg(p_t^β₁ · (1 − p_t)^β₂) · nll_t,   p_t = p_θ(y_t | x_<t),  nll_t = −log p_t

    over every label token of the batch, sg = stop-gradient. p^β₁ (saturation, WGA's weight) fades
    tokens already forgotten; (1 − p)^β₂ (importance) fades tokens the model is sure of, which the
    paper finds are the ones shared with retained knowledge. β₂ = 0 is WGA with β = β₁.
    open-unlearning@d3d7cf9 src/trainer/utils.py `compute_satimp_loss`: `weight_sat = p ** beta1`,
    `weight_imp = (1 - p) ** beta2`, both detached, `-((weight_sat * weight_imp) * lm_loss)[mask].mean()`.
    """
    nll, mask = token_nll(logits, labels)
    p = torch.exp(-nll.detach())
    return -masked_mean(p**beta1 * (1 - p) ** beta2 * nll, mask)


class SatImpParams(Params):
    beta1: float = Field(
        default=5.0, ge=0, description="SatImp's saturation exponent β₁ of the weight p^β₁ (reference: 5)."
    )
    beta2: float = Field(
        default=1.0,
        ge=0,
        description="SatImp's importance exponent β₂ of the weight (1 − p)^β₂ (reference: 1).",
    )


@register_term("satimp")
class SatImp(Term):
    part = "forget"
    params = SatImpParams
    description = "SatImp, gradient ascent with each token weighted by p^β₁·(1 − p)^β₂"

    def __call__(self, inputs: Mapping[str, TermInput], p: SatImpParams) -> torch.Tensor:
        x = inputs["text"]
        return satimp(x.logits, x.labels, p.beta1, p.beta2)
