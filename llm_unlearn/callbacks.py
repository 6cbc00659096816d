"""Evaluation during unlearning: stop once a forget metric reaches a threshold."""

from __future__ import annotations

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from llm_unlearn.metrics import EvalContext, evaluate


class StopOnMetric(TrainerCallback):
    """Every `every_n_steps`, evaluate `metric` on the model being unlearned; stop at ≤ `below`.

    Stopping all methods at the same full-precision forget level makes their quantized rows
    comparable: what differs is then only how the forgetting survives quantization.
    """

    def __init__(self, metric: str, below: float, every_n_steps: int, ctx: EvalContext) -> None:
        self.metric, self.below, self.every_n_steps, self.ctx = metric, below, every_n_steps, ctx

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ) -> TrainerControl:
        if state.global_step % self.every_n_steps:
            return control
        was_training = model.training
        value = evaluate(model, self.ctx, [self.metric])[self.metric]["agg_value"]
        model.train(was_training)
        state.log_history.append({"step": state.global_step, f"eval_{self.metric}": value})
        if value <= self.below:
            control.should_training_stop = True
        return control
