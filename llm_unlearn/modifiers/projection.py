"""OEU's gradient projection (arXiv 2602.00567; the maths in llm_unlearn/projection.py): the
forget gradient projected orthogonal to the retain gradient, on for every method that projects
gradients (`Method.projection`, e.g. oeu); the section tunes it (`scope: global` is the ablation)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llm_unlearn.methods import Method
from llm_unlearn.modifiers.base import Modifier, Section, register_modifier


class ProjectionSection(Section):
    alpha: float = Field(default=1.0, ge=0, le=1, description="α: 1 removes the whole retain component.")
    scope: Literal["layer", "global"] = Field(default="layer", description="'global' is the ablation.")


@register_modifier("projection")
class Projection(Modifier):
    position = 30
    section = ProjectionSection
    description = "OEU's gradient projection (methods with a projection only, e.g. oeu)."
    suffix_label = "+global"

    def active(self, method: Method, section: ProjectionSection | None) -> bool:
        return method.projection is not None

    def suffix(self, section: ProjectionSection | None) -> str:
        return self.suffix_label if section and section.scope == "global" else ""

    def check_method(self, method: Method, section: ProjectionSection | None) -> None:
        if section is not None and method.projection is None:
            raise ValueError(
                f"projection applies to methods that project gradients (oeu), not {method.name!r}"
            )

    def check_recipe(self, recipe: Any, index: int, section: ProjectionSection | None) -> None:
        if recipe.train.get("fp16"):
            raise ValueError(
                f"method.{index}: OEU's hand-written update bypasses fp16's loss scaler; use train.bf16"
            )
        if recipe.train.get("fsdp") or recipe.train.get("deepspeed"):
            raise ValueError(
                f"method.{index}: OEU projects whole per-layer gradients; FSDP/DeepSpeed shard them: use DDP"
            )

    def settings(
        self, method: Method, section: ProjectionSection | None, resolved: dict[str, Any]
    ) -> dict[str, Any]:
        section = section or ProjectionSection()
        return {"projection": section.scope, "projection_alpha": section.alpha}

    def record(self, section: ProjectionSection | None, args: Any, trainer: Any) -> dict[str, Any]:
        return {
            "projection": args.projection,
            "projection_alpha": args.projection_alpha if args.projection else None,
        }

    def facts(self, resolved: dict[str, Any]) -> list[tuple[str, str]]:
        scope = resolved.get("projection")
        return [("OEU projection", f"scope `{scope}`")] if scope else []

    def hyper_parameters(self, resolved: dict[str, Any]) -> dict[str, Any]:
        if not resolved.get("projection"):
            return {}
        return {"projection": resolved["projection"], "projection_alpha": resolved["projection_alpha"]}

    def tags(self, section: ProjectionSection | None) -> list[str]:
        return []  # the method's own tag (oeu) says it
