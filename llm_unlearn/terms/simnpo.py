"""SimNPO: simple, reference-free negative preference optimisation (Fan et al. 2024, arXiv 2410.07163)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from llm_unlearn.terms.base import Params, Term, TermInput, register_term, token_nll


def simnpo(
    logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 0.1,
    gamma: float = 0.0,
    convention: str = "paper",
) -> torch.Tensor:
    """SimNPO (Fan et al. 2024, Eq. 4): NPO with the reference model replaced by length normalisation.

    paper:            L = −(2/β) · mean_seq log σ(β · nll(θ, x_f)/|y| − γ)
    open_unlearning:  L = −(2/β) · mean_seq log σ(β · (nll(θ, x_f)/n − γ)),  n = #{t : labels_t ≠ −100}

    |y| = the label tokens the sequence predicts (after the shift), γ ≥ 0 the reward margin.
    The paper writes −(β/|y|)·log π_θ(y|x) − γ inside σ, i.e. β·nll/|y| − γ (γ not scaled by β).
    open-unlearning (src/trainer/unlearn/simnpo.py, `SimNPO.compute_loss`: `loss_mask = labels !=
    -100`, `forget_loss / loss_mask.sum(-1) - self.delta`, nll from src/trainer/utils.py
    `compute_batch_nll`) counts the UNSHIFTED labels, so n = |y| + 1 when the first token is a label
    (nothing masked) and n = |y| when a prompt is masked; it multiplies γ by β. `convention` picks
    one of the two. Minimising L raises the per-token NLL of the forget text, with weight 1 − σ(·),
    which fades once it is high. A sequence with no label has nll 0 and n clamped to 1 (their 0/0).
    """
    nll, mask = token_nll(logits, labels)
    if convention == "paper":
        reward = beta * nll.sum(dim=-1) / mask.sum(dim=-1).float().clamp(min=1) - gamma
    else:
        labelled = (labels != -100).sum(dim=-1).float()
        reward = beta * (nll.sum(dim=-1) / labelled.clamp(min=1) - gamma)
    return -(2.0 / beta) * F.logsigmoid(reward).mean()


class SimNPOParams(Params):
    beta: float = Field(
        default=0.1, gt=0, description="SimNPO's inverse temperature β (the method's β; the paper tunes it)."
    )
    gamma: float = Field(
        default=0.0, ge=0, description="SimNPO's reward margin γ ≥ 0 (0 in the paper's MUSE runs)."
    )
    convention: Literal["paper", "open_unlearning"] = Field(
        default="paper",
        description=(
            "'paper': β·nll/|y| − γ; 'open_unlearning': β·(nll/n − γ), n = the labels not −100 "
            "before the shift (|y|+1 unmasked, |y| with a masked prompt), that code's form."
        ),
    )


@register_term("simnpo")
class SimNPO(Term):
    part = "forget"
    params = SimNPOParams
    description = "SimNPO, reference-free length-normalised NPO"

    def __call__(self, inputs: Mapping[str, TermInput], p: SimNPOParams) -> torch.Tensor:
        x = inputs["text"]
        return simnpo(x.logits, x.labels, p.beta, p.gamma, p.convention)
