"""KL to the target on the retain set (MUSE's KLR regulariser, Shi et al. 2024, arXiv 2407.06460)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from llm_unlearn.terms.base import Params, Reference, Term, TermInput, masked_mean, register_term, shifted


def klr(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL retain regulariser: mean over retain label positions of KL(p_θ₀(·|x) ‖ p_θ(·|x)).

    Both distributions go through log_softmax (feeding raw logits to `kl_div` is a known bug
    of a reference implementation); zero at θ = θ₀.
    """
    logits, _, mask = shifted(logits, labels)
    logp = torch.log_softmax(logits, dim=-1)
    ref_logp = torch.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(dim=-1)
    return masked_mean(kl, mask)


def klr_muse(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KLR as the MUSE and quantization-failure code computes it (for comparison with their tables).

    L = (1/B) · Σ_{b,t,v} exp(z_θ₀) · (z_θ₀ − z_θ)

    i.e. `F.kl_div(z_θ, z_θ₀, reduction="batchmean", log_target=True)` with raw logits z in the
    places of log-probabilities: no softmax, no shift, padding included, summed over positions and
    vocabulary and divided by the batch size (muse_bench `baselines/iterative.py`). It is zero at
    θ = θ₀ but is not a divergence: it can be negative, and it changes when the logits of a
    position shift by a constant, which leaves both distributions unchanged.
    """
    ref = ref_logits.float()
    return (ref.exp() * (ref - logits.float())).sum() / logits.shape[0]


class KLRParams(Params):
    muse_compat: bool = Field(
        default=False, description="Reproduce the MUSE code's KL on raw logits (not a divergence)."
    )


@register_term("klr")
class KLRetain(Term):
    part = "retain"
    params = KLRParams
    description = "KL to the target on the retain set"

    def reference(self, p: KLRParams) -> Reference:
        return "logits"

    def __call__(self, inputs: Mapping[str, TermInput], p: KLRParams) -> torch.Tensor:
        x = inputs["text"]
        if p.muse_compat:
            return klr_muse(x.logits, x.ref_logits)
        return klr(x.logits, x.ref_logits, x.labels)
