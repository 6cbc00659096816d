"""CE-U: cross-entropy unlearning (Yang 2025, "CE-U: Cross Entropy Unlearning", arXiv 2503.01224)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from llm_unlearn.terms.base import IGNORE_INDEX, Params, Term, TermInput, masked_mean, register_term, shifted


def ceu(logits: torch.Tensor, labels: torch.Tensor, ignore_first_n_answer_tokens: int = 1) -> torch.Tensor:
    """CE-U (Yang 2025, Eq. 2): cross-entropy to θ's own distribution with the true token removed.

    q_t = softmax(sg(z_θ,t) with z_{y_t} = −∞),   L = mean_t −Σ_v q_t,v · log p_θ,t,v

    over the label tokens but the first n of each sequence, sg = stop-gradient. The gradient in
    z_θ,t is p_θ,t − q_t: the true token's probability goes to 0 and the rest keep their ratios,
    so the loss stays bounded (CE(q, p) ≥ H(q)) where gradient ascent's diverges. The first n answer
    tokens are dropped (the paper's footnote on its training settings) by masking the first n
    labels before the shift; on raw text the first label is never predicted, so n = 1 drops nothing.
    open-unlearning@d3d7cf9 src/trainer/unlearn/ceu.py `cross_entropy_unlearning_loss`,
    `compute_batch_ceu` (`valid_mask.cumsum(dim=-1) <= ignore_first_n_answer_tokens`).
    """
    labelled = labels != IGNORE_INDEX
    labels = labels.masked_fill(
        labelled & (labelled.cumsum(dim=-1) <= ignore_first_n_answer_tokens), IGNORE_INDEX
    )
    logits, targets, mask = shifted(logits, labels)
    removed = logits.detach().scatter(-1, targets.unsqueeze(-1), float("-inf"))
    q = torch.softmax(removed, dim=-1)
    cross_entropy = -(q * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
    return masked_mean(cross_entropy, mask)


class CEUParams(Params):
    ignore_first_n_answer_tokens: int = Field(
        default=1,
        ge=0,
        description="CE-U's first answer tokens of each sequence left out of the loss (reference: 1).",
    )


@register_term("ceu")
class CrossEntropyUnlearning(Term):
    part = "forget"
    params = CEUParams
    description = "CE-U, cross-entropy to θ's own distribution with the true token removed"

    def __call__(self, inputs: Mapping[str, TermInput], p: CEUParams) -> torch.Tensor:
        x = inputs["text"]
        return ceu(x.logits, x.labels, p.ignore_first_n_answer_tokens)
