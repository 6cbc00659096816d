"""Negative preference optimisation (Zhang et al. 2024, arXiv 2404.05868)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from pydantic import Field

from llm_unlearn.terms.base import Params, Reference, Term, TermInput, register_term, sequence_nll


def npo(logits: torch.Tensor, labels: torch.Tensor, ref_nll: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Negative preference optimisation (Zhang et al. 2024).

    L = −(2/β) · mean_seq log σ(β · (nll(θ, x_f) − nll(θ₀, x_f)))

    on the per-SEQUENCE summed NLL (log π_θ(y|x) = −nll), not on raw logits. At θ = θ₀ the
    loss is (2/β)·log 2 and its gradient is −∇ mean_seq nll(θ, x_f): gradient ascent on the
    summed token NLL. `ref_nll` [B] is nll(θ₀, x_f) for the same sequences.
    """
    margin = sequence_nll(logits, labels) - ref_nll.to(logits.device, torch.float32)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def npo_muse(logits: torch.Tensor, ref_logits: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO as the MUSE and quantization-failure code computes it (for comparison with their tables).

    L = −(2/β) · mean over every batch, position and vocabulary entry of log σ(β · (z_θ₀ − z_θ))

    on raw logits z, not per-sequence log-probabilities: no softmax, no shift, and padding and
    prompt positions included (muse_bench `baselines/iterative.py`, `neg_log_ratio =
    outputs_f_ref.logits - outputs_f.logits`; the same line in zzwjames/FailureLLMUnlearning).
    """
    return -(2.0 / beta) * F.logsigmoid(beta * (ref_logits.float() - logits.float())).mean()


class NPOParams(Params):
    beta: float = Field(default=0.1, gt=0, description="NPO's inverse temperature β.")
    muse_compat: bool = Field(
        default=False,
        description="Reproduce the MUSE code's NPO on raw-logit differences (needs θ₀'s logits every step).",
    )


@register_term("npo")
class NegativePreference(Term):
    part = "forget"
    params = NPOParams
    description = "negative preference optimisation"

    def reference(self, p: NPOParams) -> Reference:
        return "logits" if p.muse_compat else "nll"

    def __call__(self, inputs: Mapping[str, TermInput], p: NPOParams) -> torch.Tensor:
        x = inputs["text"]
        if p.muse_compat:
            return npo_muse(x.logits, x.ref_logits, p.beta)
        return npo(x.logits, x.labels, x.ref_nll, p.beta)
