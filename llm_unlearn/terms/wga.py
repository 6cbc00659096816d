"""WGA: weighted gradient ascent (Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", arXiv 2502.19301)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from llm_unlearn.terms.base import Params, Term, TermInput, masked_mean, register_term, token_nll


def wga(logits: torch.Tensor, labels: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """WGA: gradient ascent with each forget token weighted by its own probability to the power β.

    L = −mean_t sg(p_θ(y_t | x_<t)^β) · nll_t,   nll_t = −log p_θ(y_t | x_<t)

    over every label token of the batch (a token mean, as GA's ce), sg = stop-gradient: the weight
    is a constant of the step, so the gradient is GA's with each token scaled by p_t^β, and a token
    already unlikely stops pulling the model away (GA's gradient does not fade). β = 0 is GA.
    open-unlearning@d3d7cf9 src/trainer/utils.py `compute_wga_loss`: `weight_ce =
    ((-lm_loss).exp().detach()) ** beta`, `-(weight_ce * lm_loss)[labels != -100].mean()`.
    """
    nll, mask = token_nll(logits, labels)
    weight = torch.exp(-beta * nll.detach())
    return -masked_mean(weight * nll, mask)


class WGAParams(Params):
    beta: float = Field(
        default=1.0,
        ge=0,
        description="WGA's exponent β of the token weight p^β (open-unlearning's default 1; 0 is GA).",
    )


@register_term("wga")
class WeightedGradientAscent(Term):
    part = "forget"
    params = WGAParams
    description = "WGA, gradient ascent with each token weighted by p^β"

    def __call__(self, inputs: Mapping[str, TermInput], p: WGAParams) -> torch.Tensor:
        x = inputs["text"]
        return wga(x.logits, x.labels, p.beta)
