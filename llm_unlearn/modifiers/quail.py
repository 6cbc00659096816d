"""QUAIL ("QUAIL: Quantization Aware Unlearning for Mitigating Misinformation in LLMs"): add the
logit-space hinge (terms/hinge.py) on the forget set to any method, its margin in logit units
or `auto`, half the mean grid step of an RTN quantizer on the target's weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from llm_unlearn.methods import Method
from llm_unlearn.modifiers.base import Modifier, Section, Settings, register_modifier
from llm_unlearn.quant import get_quantizer


class QuailSection(Section):
    weight: float = Field(default=1.0, gt=0, description="λ_h, the weight of the hinge.")
    margin: float | Literal["auto"] = Field(
        default="auto",
        description="m in logit units, or 'auto' = half the mean grid step of `quantizer` on the target's "
        "weights (the paper's rule; weights and logits have different units, so keep it tunable).",
    )
    distance: Literal["mean_abs", "l2", "linf"] = "mean_abs"
    quantizer: str = Field(default="rtn-w4-g128", description="The RTN quantizer whose step sets m=auto.")

    @field_validator("margin")
    @classmethod
    def _non_negative(cls, margin: float | str) -> float | str:
        if not isinstance(margin, str) and margin < 0:
            raise ValueError(f"margin must be >= 0 or 'auto', got {margin}")
        return margin

    @field_validator("quantizer")
    @classmethod
    def _rtn(cls, name: str) -> str:
        if not get_quantizer(name).has_mean_step:
            raise ValueError(f"{name!r}: margin auto is defined on an RTN grid; name an rtn-w... quantizer")
        return name


class QuailSettings(Settings):
    """The hinge term's weight and parameters (terms/hinge.py), the margin resolved."""

    weight: float = Field(ge=0, description="λ_h, the weight of the logit-space hinge; 0 turns it off.")
    margin: float = Field(
        ge=0,
        description="m in logit units. The paper sets it to half the quantization step of the weights (a "
        "recipe's `margin: auto`); weights and logits have different units, so tune it.",
    )
    distance: Literal["mean_abs", "l2", "linf"] = Field(
        default="mean_abs", description="Distance over the vocabulary."
    )


@register_modifier("quail")
class Quail(Modifier):
    position = 20
    section = QuailSection
    training = QuailSettings
    description = "QUAIL: add the logit-space hinge."
    suffix_label = "+quail"

    def quantizers(self, section: QuailSection | None) -> list[tuple[str, str]]:
        # a given margin never quantizes with it
        return [("quantizer", section.quantizer)] if section and section.margin == "auto" else []

    def prepare(self, section: QuailSection, model: Any) -> dict[str, Any]:
        if section.margin != "auto":
            return {}
        return {"hinge_margin": get_quantizer(section.quantizer).mean_step(model) / 2}

    def settings(self, method: Method, section: QuailSection, resolved: dict[str, Any]) -> QuailSettings:
        margin = section.margin if section.margin != "auto" else resolved.get("hinge_margin")
        if margin is None:
            raise ValueError("QUAIL margin 'auto' must be resolved from the target model first")
        return QuailSettings(weight=section.weight, margin=margin, distance=section.distance)

    def terms(self, settings: QuailSettings) -> list[tuple[str, float, dict[str, Any]]]:
        # a weight of 0 leaves the hinge out, so a run without it sums the same terms
        if settings.weight == 0:
            return []
        return [("hinge", settings.weight, {"margin": settings.margin, "distance": settings.distance})]

    def enabled(self, args: Any) -> bool:
        return False  # its hinge is a loss term (`terms`): the trainer has no hook of it to run

    def record(self, section: QuailSection | None, args: Any, trainer: Any) -> dict[str, Any]:
        # the margin trained with ('auto' resolved); weight and distance are the hinge term's
        settings = self.of(args)
        return {"hinge_margin": settings.margin if section and settings else None}

    def facts(self, resolved: dict[str, Any]) -> list[tuple[str, str]]:
        hinge = resolved["terms"].get("hinge")
        return [("QUAIL", f"logit hinge, margin {hinge['params']['margin']}")] if hinge else []
