"""Gradient descent on the retain set (MUSE's GDR regulariser, Shi et al. 2024, arXiv 2407.06460)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from llm_unlearn.terms.base import Params, Term, TermInput, ce, register_term


def gdr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient descent on retain: L = ce(θ, x_r) (the trainer multiplies by λ)."""
    return ce(logits, labels)


@register_term("gdr")
class GradientDescentRetain(Term):
    part = "retain"
    description = "gradient descent on the retain set"

    def __call__(self, inputs: Mapping[str, TermInput], p: Params) -> torch.Tensor:
        x = inputs["text"]
        return gdr(x.logits, x.labels)
