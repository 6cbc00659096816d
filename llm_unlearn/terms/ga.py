"""Gradient ascent on the forget set (MUSE's GA baseline, Shi et al. 2024, arXiv 2407.06460)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from llm_unlearn.terms.base import Params, Term, TermInput, ce, register_term


def ga(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: L = −ce(θ, x_f)."""
    return -ce(logits, labels)


@register_term("ga")
class GradientAscent(Term):
    part = "forget"
    description = "gradient ascent on the forget set"

    def __call__(self, inputs: Mapping[str, TermInput], p: Params) -> torch.Tensor:
        x = inputs["text"]
        return ga(x.logits, x.labels)
