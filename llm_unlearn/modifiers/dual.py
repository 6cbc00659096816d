"""PDU's primal-dual retain constraint (Entesari et al. 2025, "Constrained Entropic Unlearning: A
Primal-Dual Framework for Large Language Models", arXiv 2506.05314), on any method with a retain
term: unlearn under the constraint L_r(θ) ≤ ε, the retain weight λ being its Lagrange multiplier,

    θ ← θ − η·∇_θ(L_f + λ·L_r),    then    λ ← max(0, λ + η_λ·(L_r − ε))

after every batch (micro-batch under gradient accumulation), λ starting at the method's
`retain_weight`: λ grows while the retain loss is above ε and shrinks to 0 once it is below.
open-unlearning@d3d7cf9 src/trainer/unlearn/pdu.py: `PDU.final_loss_value` (the step update, with
the λ before it in the loss), `DualOptimizationCallback` (no update before `dual_warmup_epochs`
epochs). Theirs adds the constant −λ·ε to the loss it logs; the gradient is the same. Their
`dual_update_upon: epoch` (one update per epoch from a pass over the retain set) is not built.
In the trainer it wraps the training step (`training_step`)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from transformers import Trainer

from llm_unlearn.methods import Method
from llm_unlearn.modifiers.base import Modifier, Section, Settings, register_modifier


class DualSection(Section):
    epsilon: float = Field(
        ge=0,
        description="ε, the bound on the retain loss, in its units (GDR: nats per token); no default, as "
        "in the reference (`retain_loss_eps: ???`): e.g. the target model's retain loss.",
    )
    step_size: float = Field(default=1.0, gt=0, description="η_λ, the dual step size (reference: 1).")
    warmup_epochs: int = Field(
        default=0,
        ge=0,
        description="Epochs trained at the fixed λ before it moves (reference code 0, its PDU config 5).",
    )


class DualSettings(Settings):
    epsilon: float = Field(ge=0, description="ε, the bound on the retain loss.")
    step_size: float = Field(gt=0, description="η_λ, the dual step size.")
    warmup_epochs: int = Field(ge=0, description="Epochs trained at the fixed λ before it moves.")


@register_modifier("dual")
class Dual(Modifier):
    position = 40
    section = DualSection
    training = DualSettings
    description = "PDU's primal-dual update: the retain weight λ rises while the retain loss is above ε."
    suffix_label = "+dual"

    def check_method(self, method: Method, section: DualSection | None) -> None:
        if section is None:
            return
        if method.retain_loss is None:
            raise ValueError(f"dual constrains the retain term; {method.name!r} has none (e.g. use pdu)")
        if method.projection is not None:
            raise ValueError(
                f"dual and {method.name!r}'s gradient projection both take the training step over"
            )

    def settings(self, method: Method, section: DualSection, resolved: dict[str, Any]) -> DualSettings:
        return DualSettings(**section.model_dump())

    def check_config(self, settings: DualSettings, retain_loss: str | None) -> None:
        if retain_loss is None:
            raise ValueError("dual needs a retain term to constrain (retain_loss)")

    def record(self, section: DualSection | None, args: Any, trainer: Any) -> dict[str, Any]:
        # the multiplier λ reached: the retain weight the last step trained with, after its update
        on = section is not None and self.of(args) is not None
        return {
            "dual_epsilon": section.epsilon if on else None,
            "dual_step_size": section.step_size if on else None,
            "dual_lambda": trainer.retain_weight if on else None,
        }

    def facts(self, resolved: dict[str, Any]) -> list[tuple[str, str]]:
        if resolved.get("dual_epsilon") is None:
            return []
        return [
            (
                "PDU dual",
                f"retain loss ≤ {resolved['dual_epsilon']} enforced by dual ascent (step "
                f"{resolved['dual_step_size']}); final retain weight λ {resolved['dual_lambda']:.4g}",
            )
        ]

    def hyper_parameters(self, resolved: dict[str, Any]) -> dict[str, Any]:
        if resolved.get("dual_epsilon") is None:
            return {}
        return {key: resolved[key] for key in ("dual_epsilon", "dual_step_size", "dual_lambda")}

    def training_step(self, trainer: Any, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """The Trainer's own step at the current λ, then λ's update from this batch's retain loss,
        averaged over the processes so that every one holds the same λ."""
        loss = Trainer.training_step(trainer, model, inputs)
        settings = self.of(trainer.args)
        if trainer.state.epoch >= settings.warmup_epochs:
            retain = trainer.accelerator.reduce(trainer.last_retain_loss, reduction="mean").item()
            trainer.retain_weight = max(
                0.0, trainer.retain_weight + settings.step_size * (retain - settings.epsilon)
            )
        return loss
