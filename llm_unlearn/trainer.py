"""`UnlearningConfig` and `UnlearningTrainer`: the Trainer subclass every LLM method runs on.

As in TRL, the method's settings are a `TrainingArguments` subclass and the trainer overrides
only the hooks it needs (`compute_loss`, `log`). The maths is in `objectives.py`; this file
runs the forward passes, owns the reference θ₀ and composes

    L = L_forget(θ; x_f) + λ · L_retain(θ; x_r).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

from llm_unlearn import objectives
from llm_unlearn.data.collate import ForgetRetainDataset, UnlearningCollator, pad_batch
from llm_unlearn.methods import FORGET_LOSSES, RETAIN_LOSSES


@dataclass
class UnlearningConfig(TrainingArguments):
    """`TrainingArguments` plus the unlearning objective. Paper defaults: lr 1e-5, β 0.1, λ 1."""

    forget_loss: str = field(
        default="ga",
        metadata={"help": f"Forget term, one of {FORGET_LOSSES}: gradient ascent or NPO."},
    )
    retain_loss: str | None = field(
        default=None,
        metadata={"help": f"Retain term, one of {RETAIN_LOSSES} or None: descent on retain or KL to θ₀."},
    )
    retain_weight: float = field(default=1.0, metadata={"help": "λ, the weight of the retain term."})
    beta: float = field(default=0.1, metadata={"help": "NPO's inverse temperature β."})
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
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.retain_weight < 0:
            raise ValueError(f"retain_weight must be >= 0, got {self.retain_weight}")


class UnlearningTrainer(Trainer):
    """Unlearns the forget sequences of a `ForgetRetainDataset` from `model`.

    The reference θ₀ is the model as passed in: NPO needs only nll(θ₀, x_f) per forget
    sequence, computed once here and cached (no second model in memory); KLR needs θ₀'s
    distributions on every retain batch, so a frozen copy is kept in eval mode without grad.
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
        kwargs.setdefault("data_collator", UnlearningCollator(pad_id))
        if args.retain_loss == "klr" and ref_model is None:
            ref_model = copy.deepcopy(model)
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs
        )
        # compute_loss returns a per-batch mean; the Trainer must divide by accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.add_callback(_NextRetainPairing(train_dataset))
        self._ref_nll = self._reference_nll(train_dataset, pad_id) if args.forget_loss == "npo" else None
        self.ref_model = None
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    @torch.no_grad()
    def _reference_nll(self, dataset: ForgetRetainDataset, pad_id: int) -> torch.Tensor:
        """nll(θ₀, x_f) for every forget sequence, in dataset order; θ₀ = the model before training."""
        was_training = self.model.training
        self.model.eval()
        size = self.args.per_device_eval_batch_size
        values = []
        for start in range(0, len(dataset.forget), size):
            batch = pad_batch(dataset.forget[start : start + size], pad_id)
            batch = {k: v.to(self.args.device) for k, v in batch.items()}
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            values.append(objectives.sequence_nll(logits, batch["labels"]).cpu())
        self.model.train(was_training)
        return torch.cat(values)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        forget_labels = inputs["forget_labels"]
        logits = model(
            input_ids=inputs["forget_input_ids"], attention_mask=inputs["forget_attention_mask"]
        ).logits
        if self.args.forget_loss == "ga":
            loss = objectives.ga(logits, forget_labels)
        else:
            ref_nll = self._ref_nll[inputs["forget_index"].cpu()]
            loss = objectives.npo(logits, forget_labels, ref_nll, self.args.beta)
        self._metrics["forget_loss"].append(loss.item())

        if self.args.retain_loss is not None:
            retain = {
                "input_ids": inputs["retain_input_ids"],
                "attention_mask": inputs["retain_attention_mask"],
            }
            retain_labels = inputs["retain_labels"]
            retain_logits = model(**retain).logits
            if self.args.retain_loss == "gdr":
                retain_loss = objectives.gdr(retain_logits, retain_labels)
            else:
                with torch.no_grad():
                    ref_logits = self.ref_model(**retain).logits
                retain_loss = objectives.klr(retain_logits, ref_logits, retain_labels)
            self._metrics["retain_loss"].append(retain_loss.item())
            loss = loss + self.args.retain_weight * retain_loss
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Add the mean of each loss term since the last log, so a user sees which term moves.
        for key, values in self._metrics.items():
            if values:
                logs[key] = sum(values) / len(values)
        self._metrics.clear()
        super().log(logs, start_time)


class _NextRetainPairing(TrainerCallback):
    """Each epoch pairs the forget windows with the next retain windows, so a retain set larger
    than the forget set is used whole over the epochs (accelerate calls a dataset's `set_epoch`
    only when the sampler has none, so the Trainer would not)."""

    def __init__(self, dataset: ForgetRetainDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs) -> None:
        self.dataset.set_epoch(int(state.epoch or 0))
