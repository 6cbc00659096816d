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

from llm_unlearn.modifiers import MODIFIERS, Modifier
from llm_unlearn.modifiers import modifiers as registered_modifiers
from llm_unlearn.terms import TERMS, names

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
    modifiers: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "The training settings of each modifier the run uses, by modifier name (modifiers/: "
            "each one's `training` model documents its own), e.g. {'sure': {'percentile': 90}}."
        },
    )
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
        for modifier, settings in self._modifier_settings():
            modifier.check_config(settings, self.retain_loss)
        unused = set(self.term_params) - {t for t, _ in self.weighted_terms()}
        if unused:
            raise ValueError(f"term_params names terms this run does not use: {sorted(unused)}")
        self.resolved_params()  # every term's parameters validate

    def _modifier_settings(self) -> list[tuple[Modifier, Any]]:
        """Each modifier this config uses with its validated settings, in registry order."""
        unknown = set(self.modifiers) - set(MODIFIERS.names())
        if unknown:
            raise ValueError(f"modifiers names no registered modifier: {sorted(unknown)}")
        pairs = []
        for modifier in registered_modifiers():
            try:
                settings = modifier.of(self)
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"modifiers.{modifier.name}.{where}: {first['msg']}") from None
            if settings is not None:
                pairs.append((modifier, settings))
        return pairs

    def _modifier_terms(self) -> list[tuple[str, float, dict[str, Any]]]:
        return [t for modifier, settings in self._modifier_settings() for t in modifier.terms(settings)]

    def weighted_terms(self) -> list[tuple[str, float]]:
        """(term, weight) in the order they are summed: forget, the modifiers' (QUAIL's hinge), retain."""
        terms = [(self.forget_loss, 1.0)]
        terms += [(term, weight) for term, weight, _ in self._modifier_terms()]
        if self.retain_loss is not None:
            terms.append((self.retain_loss, self.retain_weight))
        return terms

    def resolved_params(self) -> dict[str, BaseModel]:
        """Each term's validated parameters, defaults filled in."""
        given = {**self.term_params, **{term: params for term, _, params in self._modifier_terms()}}
        resolved = {}
        for term, _ in self.weighted_terms():
            try:
                resolved[term] = TERMS.get(term).params(**given.get(term, {}))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"term_params.{term}.{where}: {first['msg']}") from None
        return resolved
