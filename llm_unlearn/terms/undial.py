"""UNDIAL: self-distillation toward adjusted logits (Dong et al. 2024, arXiv 2402.10052)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from llm_unlearn.terms.base import Params, Reference, Term, TermInput, masked_mean, register_term, shifted


def undial(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, strength: float
) -> torch.Tensor:
    """UNDIAL (Dong et al. 2024, Eq. 2–3): distil θ toward θ₀ with the true token's logit lowered.

    q_t = softmax(z_θ₀,t − γ · e_{y_t}),   L = mean over forget label positions of KL(q_t ‖ p_θ,t)

    (cross-entropy to q up to q's entropy, a constant: the gradient in z_θ is p_θ − q). Only the
    forget token's probability is reduced; the rest of θ₀'s distribution is kept, so the target is
    fixed and the loss is bounded below by 0, unlike gradient ascent. γ = `strength` ≥ 0.
    """
    logits, targets, mask = shifted(logits, labels)
    adjusted = (
        ref_logits[:, :-1, :]
        .float()
        .scatter_add(
            -1, targets.unsqueeze(-1), torch.full_like(targets, -strength, dtype=torch.float32).unsqueeze(-1)
        )
    )
    q_log = torch.log_softmax(adjusted, dim=-1)
    kl = (q_log.exp() * (q_log - torch.log_softmax(logits, dim=-1))).sum(dim=-1)
    return masked_mean(kl, mask)


class UndialParams(Params):
    strength: float = Field(
        default=10.0, ge=0, description="γ: how far the true token's logit is lowered in the target."
    )


@register_term("undial")
class Undial(Term):
    part = "forget"
    params = UndialParams
    description = "UNDIAL, self-distillation toward θ₀'s logits with the true token lowered"

    def reference(self, p: UndialParams) -> Reference:
        return "logits"

    def __call__(self, inputs: Mapping[str, TermInput], p: UndialParams) -> torch.Tensor:
        x = inputs["text"]
        return undial(x.logits, x.ref_logits, x.labels, p.strength)
