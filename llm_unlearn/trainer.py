"""`UnlearningConfig` and `UnlearningTrainer`: the Trainer subclass every LLM method runs on.

As in TRL, the method's settings are a `TrainingArguments` subclass and the trainer overrides
only the hooks it needs (`compute_loss`, `training_step`, `log`). The maths is in the registered
loss terms (`terms/`) and modifiers (`modifiers/`); this file runs the forward passes, builds the
references θ₀ the terms declare (the union of their needs) and sums

    L = L_forget(θ; x_f) + Σ w_m · L_m(θ; x_f) + λ · L_retain(θ; x_r)

with the terms the modifiers add in between (`Modifier.terms`: QUAIL's λ_h · hinge(z_θ, z_θ₀; x_f)),
and runs the trainer hooks of the modifiers its config enables (`Modifier.enabled`): their
refusals, their preparation before the optimizer exists, and a training step of their own.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback

from llm_unlearn import saliency
from llm_unlearn.data.collate import ForgetRetainDataset, UnlearningCollator, pad_batch
from llm_unlearn.errors import UserError
from llm_unlearn.methods import METHODS
from llm_unlearn.modifiers import Modifier, modifiers
from llm_unlearn.recipe import MethodSection, Recipe, RecipeError
from llm_unlearn.terms import TERMS, TermInput, sequence_nll
from llm_unlearn.unlearning_config import UnlearningConfig


def training_config(
    recipe: Recipe, method: MethodSection, output_dir: Path, **resolved: Any
) -> UnlearningConfig:
    """The `UnlearningConfig` of one of `recipe`'s methods: its train section, the method's terms and
    the settings of each registered modifier it uses (modifiers/); `resolved` holds what those
    modifiers resolved from the target before training (`Modifier.prepare`, e.g. QUAIL's margin
    `auto`). Here, beside the trainer that runs it, so the recipe only validates."""
    spec = METHODS.get(method.name)
    settings: dict[str, Any] = {"report_to": "none", "save_strategy": "no", **recipe.train}
    if method.learning_rate is not None:
        settings["learning_rate"] = method.learning_rate
    used = {m.name: m.settings(spec, s, resolved).model_dump() for m, s in method.active_modifiers()}
    try:
        return UnlearningConfig(
            output_dir=str(output_dir),
            forget_loss=spec.forget_loss,
            retain_loss=spec.retain_loss,
            term_params={t: p.model_dump() for t, p in spec.resolve(method.term_values()).items()},
            retain_weight=method.retain_weight,
            modifiers=used,
            **settings,
        )
    except ValueError as err:  # TrainingArguments' own cross-field checks (e.g. bf16 without a GPU)
        raise RecipeError(f"train: {str(err).splitlines()[0]}") from None


class UnlearningTrainer(Trainer):
    """Unlearns the forget sequences of a `ForgetRetainDataset` from `model`.

    The reference θ₀ is the model as passed in. Each term declares what it needs of θ₀: nll(θ₀, x_f)
    per forget sequence (NPO) is computed once here and cached; logits or hidden states on every
    batch (KLR, QUAIL, RMU, UNDIAL, IdkDPO) come, for a PEFT (LoRA) model, from the same model with
    its adapter disabled (one base copy in memory), otherwise from a frozen copy kept in eval mode.
    """

    args: UnlearningConfig

    def __init__(
        self,
        model: PreTrainedModel,
        args: UnlearningConfig,
        train_dataset: ForgetRetainDataset,
        processing_class: Any,
        ref_model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if args.retain_loss is not None and train_dataset.retain is None:
            raise ValueError(f"retain_loss={args.retain_loss!r} needs retain data in the dataset")
        pad_id = processing_class.pad_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has no pad_token_id; set tokenizer.pad_token first")
        self.check(args, model)
        kwargs.setdefault("data_collator", UnlearningCollator(pad_id))
        self.params = args.resolved_params()
        self.weights = dict(args.weighted_terms())
        needs = {TERMS.get(t).reference(p) for t, p in self.params.items()}
        if needs & {"logits", "hidden"} and ref_model is None and not _has_adapter(model):
            ref_model = copy.deepcopy(model)
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs
        )
        self.check(args, model, self.accelerator.distributed_type.value)
        # compute_loss returns a per-batch mean; the Trainer must divide by accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.add_callback(_NextRetainPairing(train_dataset))
        self.ref_model = None
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        self._ref_nll = self._reference_nll(train_dataset, pad_id) if "nll" in needs else None
        #: λ, the retain term's weight: the config's, unless a modifier moves it as training goes
        self.retain_weight: float = args.retain_weight
        #: the retain term's value on the last batch (detached), for a modifier that reacts to it
        self.last_retain_loss: torch.Tensor | None = None
        #: the modifiers this run's config enables, in registry order
        self.modifiers: list[Modifier] = _enabled(args)
        #: the enabled modifiers' own state during the run, by modifier name
        self.modifier_state: dict[str, Any] = {}
        for modifier in modifiers():
            for name, off in modifier.trainer_attributes.items():
                setattr(self, name, off)
        for modifier in self.modifiers:
            modifier.prepare_trainer(self, train_dataset, pad_id)
        #: the parameters a term restricts training to (RMU), None when every parameter trains
        self.trained: dict[str, Any] | None = self._train_term_parameters()

    @staticmethod
    def check(args: UnlearningConfig, model: nn.Module, distributed_type: str = "") -> None:
        """Refuse, as one-line user errors before anything trains, the settings the trainer cannot run:
        what each enabled modifier refuses (`Modifier.check_trainer`), a term's layer the model lacks."""
        for modifier in _enabled(args):
            modifier.check_trainer(args, model, distributed_type)
        layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        for term, p in args.resolved_params().items():
            layer = TERMS.get(term).layer(p)
            if layer is not None and layers is not None and not 0 <= layer < layers:
                raise UserError(
                    f"term {term}: layer {layer} is not one of the model's layers 0..{layers - 1}; "
                    "set the method's `layer`"
                )

    def forget_batches(
        self, dataset: ForgetRetainDataset, pad_id: int, size: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        """The forget windows in dataset order, as forget_* batches of `size`."""
        for start in range(0, len(dataset.forget), size):
            batch = pad_batch(dataset.forget[start : start + size], pad_id)
            batch = {f"forget_{k}": v.to(self.args.device) for k, v in batch.items()}
            batch["forget_index"] = torch.arange(start, start + len(batch["forget_input_ids"]))
            yield batch

    @torch.no_grad()
    def _reference_nll(self, dataset: ForgetRetainDataset, pad_id: int) -> torch.Tensor:
        """nll(θ₀, x_f) for every forget sequence, in dataset order; θ₀ = the model before training."""
        was_training = self.model.training
        self.model.eval()
        values = []
        for batch in self.forget_batches(dataset, pad_id, self.args.per_device_eval_batch_size):
            logits = self._reference_logits(self.model, batch, "forget")
            values.append(sequence_nll(logits, batch["forget_labels"]).cpu())
        self.model.train(was_training)
        return torch.cat(values)

    def _train_term_parameters(self) -> dict[str, Any] | None:
        """Freeze all but the parameters a term trains (RMU: a few MLPs), before the optimizer exists."""
        names_ = None
        for term, p in self.params.items():
            chosen = TERMS.get(term).trainable(p, self.model)
            if chosen is not None:
                names_ = set(chosen) if names_ is None else names_ & set(chosen)
        if names_ is None:
            return None
        trainable = {n for n, q in self.model.named_parameters() if q.requires_grad}
        return saliency.train_only(self.model, names_ & trainable)

    @torch.no_grad()
    def _reference_logits(self, model: nn.Module, inputs: dict[str, torch.Tensor], part: str) -> torch.Tensor:
        """θ₀'s logits on the forget or retain part of a batch."""
        return self._reference(model, _part(inputs, part), None)[0]

    @torch.no_grad()
    def _reference(
        self, model: nn.Module, x: dict[str, torch.Tensor], layer: int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """θ₀'s logits on model inputs `x`, and its hidden states after decoder layer `layer`."""
        if self.ref_model is not None:
            return _forward(self.ref_model, x, layer)
        unwrapped = self.accelerator.unwrap_model(model)
        if _has_adapter(unwrapped):
            with unwrapped.disable_adapter():
                return _forward(model, x, layer)
        return _forward(model, x, layer)  # before training (NPO's cache), the model is θ₀

    def _terms(self, model: nn.Module, inputs: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
        """Every term of this run that reads the `part` half of the batch, unweighted, by name. One
        forward pass of θ (and of θ₀ where needed) per distinct sequence batch, shared by the terms
        that read it; sequences of one view name are the same for every term (`Term.sequences`)."""
        part_batch = {k: inputs[f"{part}_{k}"] for k in ("input_ids", "attention_mask", "labels")} | {
            "index": inputs.get(f"{part}_index")
        }
        seen: dict[tuple[str, int | None], tuple[torch.Tensor, torch.Tensor | None]] = {}
        ref_seen: dict[tuple[str, int | None], tuple[torch.Tensor, torch.Tensor | None]] = {}
        losses = {}
        for term_name, p in self.params.items():
            term = TERMS.get(term_name)
            if term.part != part:
                continue
            need, layer = term.reference(p), term.layer(p)
            views = {}
            for view, seq in term.sequences(part_batch, p, self.processing_class).items():
                x = {"input_ids": seq["input_ids"], "attention_mask": seq["attention_mask"]}
                key = (view, layer)
                if key not in seen:
                    seen[key] = _forward(model, x, layer)
                logits, hidden = seen[key]
                value = TermInput(
                    logits=logits, labels=seq["labels"], attention_mask=seq["attention_mask"], hidden=hidden
                )
                if need in ("logits", "hidden"):
                    if key not in ref_seen:
                        ref_seen[key] = self._reference(model, x, layer)
                    value.ref_logits, value.ref_hidden = ref_seen[key]
                elif need == "nll":
                    value.ref_nll = self._ref_nll[seq["index"].cpu()]
                views[view] = value
            losses[term_name] = term(views, p)
        return losses

    def forget_term(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], log: bool = True
    ) -> torch.Tensor:
        """L_forget + λ_h · hinge on the forget part of the batch."""
        losses = self._terms(model, inputs, "forget")
        if log:
            for term, value in losses.items():
                self._metrics["forget_loss" if term == self.args.forget_loss else f"{term}_loss"].append(
                    value.item()
                )
        return sum(self.weights[term] * value for term, value in losses.items())

    def retain_term(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_retain on the retain part of the batch (without λ)."""
        loss = self._terms(model, inputs, "retain")[self.args.retain_loss]
        self._metrics["retain_loss"].append(loss.item())
        self.last_retain_loss = loss.detach()
        return loss

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        loss = self.forget_term(model, inputs)
        if self.args.retain_loss is not None:
            loss = loss + self.retain_weight * self.retain_term(model, inputs)
        return (loss, None) if return_outputs else loss

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """The step of the enabled modifier that takes it over (`Modifier.training_step`), if any;
        otherwise the Trainer's own step."""
        for modifier in self.modifiers:
            loss = modifier.training_step(self, model, inputs)
            if loss is not None:
                return loss
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Add the mean of each loss term since the last log, so a user sees which term moves.
        for key, values in self._metrics.items():
            if values:
                logs[key] = sum(values) / len(values)
        self._metrics.clear()
        super().log(logs, start_time)


def _forward(
    model: nn.Module, x: dict[str, torch.Tensor], layer: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits, and the hidden states after decoder layer `layer` (hidden_states[0] = embeddings)."""
    out = model(**x, output_hidden_states=layer is not None)
    return out.logits, (out.hidden_states[layer + 1] if layer is not None else None)


def _part(inputs: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    """The model inputs of the forget or retain half of a batch."""
    return {"input_ids": inputs[f"{part}_input_ids"], "attention_mask": inputs[f"{part}_attention_mask"]}


def _has_adapter(model: nn.Module) -> bool:
    """A PEFT model, whose `disable_adapter()` gives back the base model θ₀."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _enabled(args: UnlearningConfig) -> list[Modifier]:
    """The registered modifiers `args` enables, in registry order."""
    return [m for m in modifiers() if m.enabled(args)]


class _NextRetainPairing(TrainerCallback):
    """Each epoch pairs the forget windows with the next retain windows, so a retain set larger
    than the forget set is used whole over the epochs (accelerate calls a dataset's `set_epoch`
    only when the sampler has none, so the Trainer would not)."""

    def __init__(self, dataset: ForgetRetainDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs) -> None:
        self.dataset.set_epoch(int(state.epoch or 0))
