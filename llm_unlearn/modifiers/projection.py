"""OEU's gradient projection (arXiv 2602.00567; the maths in llm_unlearn/projection.py): the
forget gradient projected orthogonal to the retain gradient, on for every method that projects
gradients (`Method.projection`, e.g. oeu); the section tunes it (`scope: global` is the ablation).
In the trainer it takes the training step over (`training_step`)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from llm_unlearn import projection
from llm_unlearn.errors import UserError
from llm_unlearn.methods import Method
from llm_unlearn.modifiers.base import Modifier, Section, Settings, register_modifier


class ProjectionSection(Section):
    alpha: float = Field(default=1.0, ge=0, le=1, description="α: 1 removes the whole retain component.")
    scope: Literal["layer", "global"] = Field(default="layer", description="'global' is the ablation.")


class ProjectionSettings(Settings):
    scope: projection.Scope = Field(
        description="Project the forget gradient orthogonal to the retain gradient per parameter tensor "
        "('layer', the method) or over all at once ('global', the ablation)."
    )
    alpha: float = Field(default=1.0, ge=0, le=1, description="α in [0, 1], how much to project.")


@register_modifier("projection")
class Projection(Modifier):
    position = 30
    section = ProjectionSection
    training = ProjectionSettings
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
    ) -> ProjectionSettings:
        section = section or ProjectionSection()
        return ProjectionSettings(scope=section.scope, alpha=section.alpha)

    def check_config(self, settings: ProjectionSettings, retain_loss: str | None) -> None:
        if retain_loss is None:
            raise ValueError("projection needs a retain term to project against (retain_loss)")

    def record(self, section: ProjectionSection | None, args: Any, trainer: Any) -> dict[str, Any]:
        settings = self.of(args)
        return {
            "projection": settings.scope if settings else None,
            "projection_alpha": settings.alpha if settings else None,
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

    def check_trainer(self, args: Any, model: Any, distributed_type: str) -> None:
        if args.fsdp or args.deepspeed or distributed_type in ("FSDP", "DEEPSPEED"):
            raise UserError(
                "OEU's layer-wise projection needs whole gradients; FSDP/DeepSpeed shard them: use DDP"
            )
        if args.fp16:
            raise UserError("train.fp16 with OEU: its hand-written update bypasses the loss scaler; use bf16")

    def prepare_trainer(self, trainer: Any, dataset: Any, pad_id: int) -> None:
        trainer.modifier_state[self.name] = _Window()

    def training_step(self, trainer: Any, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """Two backward passes per micro-batch, g_f and λ·g_r kept apart, then the update
        projection.combine(ḡ_f, λ·ḡ_r) written into `.grad` once per optimizer step.

        Gradient accumulation: g_f and g_r are summed separately over the micro-batches of the
        accumulation window and averaged (as the Trainer averages a loss over the window), and
        the projection acts on these averages, i.e. on the gradients actually applied, not on
        each micro-batch. Data parallel: the forward runs on the unwrapped module and the
        gradients are taken with `autograd.grad`, so DDP's hooks never reduce them; the averaged
        g_f and g_r are all-reduced here before projecting, so every process applies the same
        update.
        """
        window: _Window = trainer.modifier_state[self.name]
        model.train()
        inputs = trainer._prepare_inputs(inputs)
        network = trainer.accelerator.unwrap_model(model)
        params = [p for p in network.parameters() if p.requires_grad]
        with trainer.compute_loss_context_manager():
            forget_loss = trainer.forget_term(network, inputs)
        g_f = torch.autograd.grad(forget_loss, params, allow_unused=True)
        with trainer.compute_loss_context_manager():
            retain_loss = trainer.args.retain_weight * trainer.retain_term(network, inputs)
        g_r = torch.autograd.grad(retain_loss, params, allow_unused=True)
        if window.grads is None:
            window.grads = ([None] * len(params), [None] * len(params))
        for total, grads in zip(window.grads, (g_f, g_r), strict=True):
            for i, g in enumerate(grads):
                if g is not None:
                    total[i] = g.detach() if total[i] is None else total[i] + g.detach()
        window.micro_steps += 1
        if trainer.accelerator.sync_gradients:
            _apply_projected_update(trainer, window, params, self.of(trainer.args))
        return (forget_loss + retain_loss).detach() / trainer.current_gradient_accumulation_steps


class _Window:
    """The forget and retain gradients summed over an accumulation window, per parameter."""

    def __init__(self) -> None:
        self.grads: tuple[list, list] | None = None
        self.micro_steps = 0


def _apply_projected_update(
    trainer: Any, window: _Window, params: list[torch.nn.Parameter], settings: ProjectionSettings
) -> None:
    sum_f, sum_r = window.grads
    g_f = [None if g is None else g / window.micro_steps for g in sum_f]
    g_r = [None if g is None else g / window.micro_steps for g in sum_r]
    accelerator = trainer.accelerator
    if accelerator.num_processes > 1:
        g_f, g_r = ([_mean_over_processes(accelerator, g) for g in grads] for grads in (g_f, g_r))
    update = projection.combine(g_f, g_r, settings.alpha, settings.scope)
    for p, u in zip(params, update, strict=True):
        p.grad = None if u is None else u.to(p.dtype)
    window.grads = None
    window.micro_steps = 0


def _mean_over_processes(accelerator: Any, grad: torch.Tensor | None) -> torch.Tensor | None:
    # A parameter no process's loss reached has no gradient anywhere (same graph on every rank).
    return None if grad is None else accelerator.reduce(grad, reduction="mean")
