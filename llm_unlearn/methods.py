"""Unlearning methods by name: which forget term and which retain term (llm_unlearn/terms/) the trainer sums.

The six baselines of MUSE and of the quantization-failure paper (arXiv 2410.16454):
GA, GA_GDR, GA_KLR, NPO, NPO_GDR, NPO_KLR (lr 1e-5, β = 0.1, λ = 1 in the papers), and OEU
(entropy forgetting + GDR with the forget gradient projected orthogonal to the retain gradient,
arXiv 2602.00567). SURE and QUAIL are not methods of their own: they modify any of these
(a recipe's `sure:` / `quail:` entries), as in their papers; they and OEU's projection are the
registered modifiers of `modifiers/`. A new method is a term file in `terms/` plus one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from llm_unlearn.registry import Registry
from llm_unlearn.terms import TERMS


@dataclass(frozen=True)
class Method:
    name: str
    forget_loss: str
    retain_loss: str | None
    description: str
    #: OEU's gradient projection scope by default ("layer"), None for methods that add gradients
    projection: str | None = None

    @property
    def terms(self) -> tuple[str, ...]:
        return (self.forget_loss,) if self.retain_loss is None else (self.forget_loss, self.retain_loss)

    def parameter_fields(self) -> dict[str, tuple[str, ...]]:
        """Each term parameter of this method -> the terms that declare it."""
        fields: dict[str, tuple[str, ...]] = {}
        for term in self.terms:
            for field in TERMS.get(term).params.model_fields:
                fields[field] = (*fields.get(field, ()), term)
        return fields

    def resolve(self, given: dict[str, object]) -> dict[str, BaseModel]:
        """Each term's parameters from the recipe's values (a value goes to every term declaring it)."""
        out = {}
        for term in self.terms:
            params = TERMS.get(term).params
            out[term] = params(**{k: v for k, v in given.items() if k in params.model_fields})
        return out


METHODS: Registry[Method] = Registry("method")

for _method in (
    Method("ga", "ga", None, "gradient ascent on the forget set"),
    Method("ga_gdr", "ga", "gdr", "gradient ascent + gradient descent on retain"),
    Method("ga_klr", "ga", "klr", "gradient ascent + KL to the target on retain"),
    Method("npo", "npo", None, "negative preference optimisation"),
    Method("npo_gdr", "npo", "gdr", "NPO + gradient descent on retain"),
    Method("npo_klr", "npo", "klr", "NPO + KL to the target on retain"),
    Method(
        "oeu", "entropy", "gdr", "entropy + GDR, forget gradient orthogonal to retain", projection="layer"
    ),
    Method("undial", "undial", None, "UNDIAL, self-distillation toward θ₀ with the forget token lowered"),
    Method(
        "rmu", "rmu", "rmu_retain", "RMU, forget hidden states steered to a random direction at one layer"
    ),
    Method("idknll", "idknll", "gdr", "IdkNLL, a refusal as the forget answer + GDR"),
    Method("idkdpo", "idkdpo", "gdr", "IdkDPO, a refusal preferred over the forget answer + GDR"),
    Method("simnpo", "simnpo", "gdr", "SimNPO (reference-free, length-normalised NPO) + GDR"),
    Method("wga", "wga", "gdr", "WGA, gradient ascent weighted by each token's p^β + GDR"),
    Method("satimp", "satimp", "gdr", "SatImp, gradient ascent weighted by p^β₁·(1 − p)^β₂ + GDR"),
    Method("ceu", "ceu", None, "CE-U, cross-entropy to θ's distribution with the true token removed"),
    Method("pdu", "pdu", "gdr", "PDU's logit flattening + GDR (its dual ascent of λ: the `dual` modifier)"),
    Method("altpo", "altpo", "gdr", "AltPO, alternate answers preferred over the forget answer (DPO) + GDR"),
):
    METHODS.register(_method.name)(_method)
