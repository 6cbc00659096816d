"""SURE (Zhang et al., arXiv 2410.16454, section 6): train only the modules whose forget-loss
gradient at θ₀ is most salient (the maths in saliency.py; its pass when the trainer is built, before
the optimizer exists, records the choice as `trainer.saliency`)."""

from __future__ import annotations

from typing import Any

from accelerate.utils import broadcast_object_list
from pydantic import Field

from llm_unlearn import saliency
from llm_unlearn.errors import UserError
from llm_unlearn.methods import Method
from llm_unlearn.modifiers.base import Modifier, Section, Settings, register_modifier


class SureSection(Section):
    percentile: float = Field(default=90.0, ge=0, le=100, description="γ: train modules at or above it.")


class SureSettings(Settings):
    percentile: float = Field(
        ge=0,
        le=100,
        description="γ: train only the Linear/Embedding weights whose forget-gradient norm at θ₀ is at or "
        "above this percentile of the modules' (the paper's γ = 90).",
    )


@register_modifier("sure")
class Sure(Modifier):
    position = 10
    section = SureSection
    training = SureSettings
    description = "SURE: train only the salient modules."
    suffix_label = "+sure"
    #: SURE's choice (percentile, modules, count, param_share, every module's saliency), None without
    trainer_attributes = {"saliency": None}

    def check_recipe(self, recipe: Any, index: int, section: SureSection | None) -> None:
        if recipe.model.lora is not None:
            raise ValueError(
                "model.lora with a method's sure: SURE picks base-model modules; use one of them"
            )

    def settings(self, method: Method, section: SureSection, resolved: dict[str, Any]) -> SureSettings:
        return SureSettings(percentile=section.percentile)

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

    def check_trainer(self, args: Any, model: Any, distributed_type: str) -> None:
        if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):  # a PEFT (LoRA) model
            raise UserError(
                "SURE selects base-model modules; it does not combine with a LoRA adapter (model.lora)"
            )

    def prepare_trainer(self, trainer: Any, dataset: Any, pad_id: int) -> None:
        """Freeze all but the salient modules. Done before the optimizer exists, so frozen parameters
        get no optimizer state; every process takes the main process's choice, so the processes of a
        data-parallel run train the same parameters."""
        model, args = trainer.model, trainer.args
        percentile = self.of(args).percentile
        _checkpoint_if_asked(model, args)  # a full backward pass: the memory training will need
        batches = trainer.forget_batches(dataset, pad_id, args.per_device_train_batch_size)
        losses = (trainer.forget_term(model, batch, log=False) for batch in batches)
        scores = saliency.module_saliency(model, losses)
        chosen = [saliency.salient_modules(scores, percentile)]
        if trainer.accelerator.num_processes > 1:
            broadcast_object_list(chosen)
        choice = saliency.train_only(model, chosen[0])
        trainer.saliency = {"percentile": percentile, **choice, "saliency": scores}


def _checkpoint_if_asked(model: Any, args: Any) -> None:
    """Turn on activation checkpointing now when the run asks for it (the Trainer does so only in
    `train()`). transformers < 5.18, which the [gptq] extra pins, calls it gradient checkpointing."""
    if getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", False):
        named = getattr(model, "activation_checkpointing_enable", None)
        (named or model.gradient_checkpointing_enable)()
