"""Unlearning methods by name: which forget term and which retain term the trainer composes.

The six baselines of MUSE and of the quantization-failure paper (arXiv 2410.16454):
GA, GA_GDR, GA_KLR, NPO, NPO_GDR, NPO_KLR (lr 1e-5, β = 0.1, λ = 1 in the papers), and OEU
(entropy forgetting + GDR with the forget gradient projected orthogonal to the retain gradient,
arXiv 2602.00567). SURE and QUAIL are not methods of their own: they modify any of these
(a recipe's `sure:` / `quail:` entries), as in their papers.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_unlearn.registry import Registry

FORGET_LOSSES = ("ga", "npo", "entropy")
RETAIN_LOSSES = ("gdr", "klr")


@dataclass(frozen=True)
class Method:
    name: str
    forget_loss: str
    retain_loss: str | None
    description: str
    #: OEU's gradient projection scope by default ("layer"), None for methods that add gradients
    projection: str | None = None


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
):
    METHODS.register(_method.name)(_method)
