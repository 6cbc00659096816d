"""PDU's forget loss: the logit spread (Entesari et al. 2025, "Constrained Entropic Unlearning: A
Primal-Dual Framework for Large Language Models", arXiv 2506.05314)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from llm_unlearn.terms.base import Params, Term, TermInput, masked_mean, register_term, shifted


def pdu(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PDU's forget loss: the squared gap between the largest logit and the mean logit.

    L = mean_t (max_v z_θ,t,v − (1/V)·Σ_v z_θ,t,v)²

    over the positions that predict a label token. It is 0 exactly when the logits are flat (the
    uniform, maximum-entropy distribution) and, unlike the entropy, has a gradient that does not
    vanish near a confident prediction: 2·(max − mean)·(e_argmax − 1/V) in z. It reads no label
    value, only which positions are labelled. open-unlearning@d3d7cf9 src/trainer/unlearn/pdu.py
    `PDU.compute_loss` (`(maxLogits - averageLogits) ** 2` averaged over `labels != -100`) masks
    the unshifted positions (the logits after each label token); here, as in every term, the
    positions that predict one.
    """
    logits, _, mask = shifted(logits, labels)
    spread = logits.max(dim=-1).values - logits.mean(dim=-1)
    return masked_mean(spread**2, mask)


@register_term("pdu")
class LogitSpread(Term):
    part = "forget"
    params = Params
    description = "PDU's forget loss, the squared gap between the largest and the mean logit"

    def __call__(self, inputs: Mapping[str, TermInput], p: Params) -> torch.Tensor:
        x = inputs["text"]
        return pdu(x.logits, x.labels)
