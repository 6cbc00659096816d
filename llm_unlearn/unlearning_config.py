"""`UnlearningConfig`: `TrainingArguments` plus the unlearning objective, the settings
`UnlearningTrainer` (trainer.py) runs with.

Apart from the trainer so that the recipe can validate its `train:` section against these fields
(and refuse the ones its method section sets) without importing the trainer; a recipe's method
becomes one of these in `trainer.training_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from transformers import TrainingArguments

from llm_unlearn import projection
from llm_unlearn.terms import HINGE_DISTANCES, TERMS, names

FORGET_LOSSES = names("forget")
RETAIN_LOSSES = names("retain")


@dataclass
class UnlearningConfig(TrainingArguments):
    """`TrainingArguments` plus the unlearning objective. Paper defaults: lr 1e-5, β 0.1, λ 1."""

    forget_loss: str = field(
        default="ga", metadata={"help": f"Forget term, one of {FORGET_LOSSES} (llm_unlearn/terms/)."}
    )
    retain_loss: str | None = field(
        default=None, metadata={"help": f"Retain term, one of {RETAIN_LOSSES} or None."}
    )
    retain_weight: float = field(default=1.0, metadata={"help": "λ, the weight of the retain term."})
    term_params: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "Each term's parameters by term name (its defaults where not given), e.g. "
            "{'npo': {'beta': 0.1}}."
        },
    )
    saliency_percentile: float | None = field(
        default=None,
        metadata={
            "help": "SURE: train only the Linear/Embedding weights whose forget-gradient norm at θ₀ is at "
            "or above this percentile (the paper's γ = 90); None trains every parameter."
        },
    )
    hinge_weight: float = field(
        default=0.0, metadata={"help": "QUAIL: λ_h, the weight of the logit-space hinge; 0 turns it off."}
    )
    hinge_margin: float = field(
        default=0.0,
        metadata={
            "help": "QUAIL: margin m in logit units. The paper sets it to half the quantization step of the "
            "weights (a recipe's `margin: auto`); weights and logits have different units, so tune it."
        },
    )
    hinge_distance: str = field(
        default="mean_abs",
        metadata={"help": f"QUAIL: distance over the vocabulary, {HINGE_DISTANCES}."},
    )
    projection: str | None = field(
        default=None,
        metadata={
            "help": "OEU: project the forget gradient orthogonal to the retain gradient per parameter "
            "tensor ('layer', the method) or over all at once ('global', the ablation); None adds them."
        },
    )
    projection_alpha: float = field(default=1.0, metadata={"help": "OEU: α in [0, 1], how much to project."})
    # The batches carry forget_* / retain_* columns that no model.forward names.
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the forget_/retain_ columns are not model inputs."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"forget_loss must be one of {FORGET_LOSSES}, got {self.forget_loss!r}")
        if self.retain_loss is not None and self.retain_loss not in RETAIN_LOSSES:
            raise ValueError(f"retain_loss must be one of {RETAIN_LOSSES} or None, got {self.retain_loss!r}")
        if self.retain_weight < 0:
            raise ValueError(f"retain_weight must be >= 0, got {self.retain_weight}")
        if self.saliency_percentile is not None and not 0 <= self.saliency_percentile <= 100:
            raise ValueError(f"saliency_percentile must be in [0, 100], got {self.saliency_percentile}")
        if self.hinge_weight < 0 or self.hinge_margin < 0:
            raise ValueError("hinge_weight and hinge_margin must be >= 0")
        if self.hinge_distance not in HINGE_DISTANCES:
            raise ValueError(f"hinge_distance must be one of {HINGE_DISTANCES}")
        if self.projection is not None:
            if self.projection not in projection.SCOPES:
                raise ValueError(f"projection must be one of {projection.SCOPES} or None")
            if self.retain_loss is None:
                raise ValueError("projection needs a retain term to project against (retain_loss)")
            if not 0 <= self.projection_alpha <= 1:
                raise ValueError(f"projection_alpha must be in [0, 1], got {self.projection_alpha}")
        unused = set(self.term_params) - {t for t, _ in self.weighted_terms()}
        if unused:
            raise ValueError(f"term_params names terms this run does not use: {sorted(unused)}")
        self.resolved_params()  # every term's parameters validate

    def weighted_terms(self) -> list[tuple[str, float]]:
        """(term, weight) in the order they are summed: forget, QUAIL's hinge, retain."""
        terms = [(self.forget_loss, 1.0)]
        if self.hinge_weight > 0:
            terms.append(("hinge", self.hinge_weight))
        if self.retain_loss is not None:
            terms.append((self.retain_loss, self.retain_weight))
        return terms

    def resolved_params(self) -> dict[str, BaseModel]:
        """Each term's validated parameters, defaults filled in."""
        given = {**self.term_params}
        if self.hinge_weight > 0:
            given["hinge"] = {"margin": self.hinge_margin, "distance": self.hinge_distance}
        resolved = {}
        for term, _ in self.weighted_terms():
            try:
                resolved[term] = TERMS.get(term).params(**given.get(term, {}))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"term_params.{term}.{where}: {first['msg']}") from None
        return resolved
