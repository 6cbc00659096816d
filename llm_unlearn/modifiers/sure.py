"""SURE (Zhang et al., arXiv 2410.16454, section 6): train only the modules whose forget-loss
gradient at θ₀ is most salient (the maths in saliency.py; the trainer's pass before the optimizer
exists records the choice as `trainer.saliency`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from llm_unlearn.methods import Method
from llm_unlearn.modifiers.base import Modifier, Section, register_modifier


class SureSection(Section):
    percentile: float = Field(default=90.0, ge=0, le=100, description="γ: train modules at or above it.")


@register_modifier("sure")
class Sure(Modifier):
    position = 10
    section = SureSection
    description = "SURE: train only the salient modules."
    suffix_label = "+sure"

    def check_recipe(self, recipe: Any, index: int, section: SureSection | None) -> None:
        if recipe.model.lora is not None:
            raise ValueError(
                "model.lora with a method's sure: SURE picks base-model modules; use one of them"
            )

    def settings(self, method: Method, section: SureSection, resolved: dict[str, Any]) -> dict[str, Any]:
        return {"saliency_percentile": section.percentile}

    def record(self, section: SureSection | None, args: Any, trainer: Any) -> dict[str, Any]:
        # the modules chosen, their share of the parameters and every module's saliency
        return {"sure": trainer.saliency}

    def facts(self, resolved: dict[str, Any]) -> list[tuple[str, str]]:
        sure = resolved.get("sure")
        if not sure:
            return []
        return [
            (
                "SURE",
                f"trained only the {sure['count']} most salient modules (percentile {sure['percentile']}, "
                f"{sure['param_share']:.1%} of the parameters); every other weight is unchanged",
            )
        ]

    def hyper_parameters(self, resolved: dict[str, Any]) -> dict[str, Any]:
        sure = resolved.get("sure")
        return {"saliency_percentile": sure["percentile"]} if sure else {}
