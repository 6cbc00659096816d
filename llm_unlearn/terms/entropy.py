"""OEU's forget term: maximise the predictive entropy on forget text (arXiv 2602.00567)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from llm_unlearn.terms.base import Params, Term, TermInput, masked_mean, register_term, shifted


def entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """OEU's forget term: L = −mean over label positions of H(p_θ(·|x_<t)).

    Minimising it maximises the predictive entropy on forget text, pushing its next-token
    distributions toward uniform (H ≤ log V) instead of away from the true token as GA does.
    """
    logits, _, mask = shifted(logits, labels)
    logp = torch.log_softmax(logits, dim=-1)
    h = -(logp.exp() * logp).sum(dim=-1)
    return -masked_mean(h, mask)


@register_term("entropy")
class Entropy(Term):
    part = "forget"
    description = "predictive entropy on the forget set, maximised"

    def __call__(self, inputs: Mapping[str, TermInput], p: Params) -> torch.Tensor:
        x = inputs["text"]
        return entropy(x.logits, x.labels)
