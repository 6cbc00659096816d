"""IdkDPO: prefer a refusal over the forget answer, DPO-style (TOFU, Maini et al. 2024, arXiv 2401.06121;
Rafailov et al. 2023's DPO loss; the `DPO` + idk baseline of open-unlearning)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from llm_unlearn.terms.base import Reference, Term, TermInput, register_term, sequence_nll
from llm_unlearn.terms.idk import IdkParams, idk_pairs, refusal_texts


def idkdpo(
    nll_idk: torch.Tensor,
    ref_nll_idk: torch.Tensor,
    nll_answer: torch.Tensor,
    ref_nll_answer: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """L = −mean_seq log σ(β · [(log π_θ(y_idk|x) − log π_θ₀(y_idk|x)) − (log π_θ(y|x) − log π_θ₀(y|x))])

    on per-sequence summed log-probs of the answer tokens (log π = −nll; arguments [B] each), as in
    METHODS.md. open-unlearning scales the same loss by 2/β; at θ = θ₀ this one is log 2.
    """
    margin = (ref_nll_idk - nll_idk) - (ref_nll_answer - nll_answer)
    return -F.logsigmoid(beta * margin).mean()


class IdkDPOParams(IdkParams):
    beta: float = Field(default=0.1, gt=0, description="DPO's inverse temperature β.")


@register_term("idkdpo")
class IdkDPO(Term):
    part = "forget"
    params = IdkDPOParams
    description = "IdkDPO: a refusal preferred over the forget answer"

    def reference(self, p: IdkDPOParams) -> Reference:
        return "logits"

    def sequences(self, batch: dict[str, torch.Tensor], p: IdkDPOParams, tokenizer: Any) -> dict[str, dict]:
        return idk_pairs(batch, tokenizer, refusal_texts(p.refusals), p.prompt_share, p.seed)

    def __call__(self, inputs: Mapping[str, TermInput], p: IdkDPOParams) -> torch.Tensor:
        idk, answer = inputs["idk"], inputs["answer"]
        return idkdpo(
            sequence_nll(idk.logits, idk.labels),
            sequence_nll(idk.ref_logits, idk.labels),
            sequence_nll(answer.logits, answer.labels),
            sequence_nll(answer.ref_logits, answer.labels),
            p.beta,
        )
