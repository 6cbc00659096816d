"""PrivLeak by the gradient-norm attack: a passage the model was trained on sits near a minimum of
its loss, so the loss's gradient with respect to the weights is small there (Wang et al. 2024,
arXiv 2402.17012; open-unlearning's `mia_gradnorm`).

Reference: open-unlearning, `src/evals/metrics/mia/gradnorm.py::GradNormAttack` (locuslab/
open-unlearning @ d3d7cf9e), with p = 2 and one passage at a time as its MUSE config
(`configs/eval/muse_metrics/mia_gradnorm.yaml`). Per passage x, with loss(x) = −mean_t log p(x_t |
x_<t) (privleak's `loss`) and θ_1..θ_J the model's parameter tensors that get a gradient,

    score(x) = (1/J) · Σ_j ‖∂ loss(x) / ∂θ_j‖_2

the MEAN of the per-tensor norms, as theirs (not one global norm); higher = less likely a member,
as every privleak score (their `compute_score` docstring says "negative gradient norm", its code
returns the norm itself, as here). AUC and PrivLeak as `privleak` (members labelled 1; AUC_ref =
the retrain model's AUC of this attack). Theirs switches the model to train mode for the pass; here it stays
in eval mode, so a model with dropout scores deterministically (Llama-family models have none, and
score alike). The gradients are returned by `torch.autograd.grad`, never left in `.grad`: the model
is unchanged. It needs autograd through the transformers model, so llama.cpp cells cannot run it;
under bitsandbytes' kernels the packed weights take no gradient, so those cells average over the
other tensors only (the simulated cells, the default, count every weight).
"""

from __future__ import annotations

import torch
from torch import nn

from llm_unlearn.context import context_length, count_over, cut_record, cut_right
from llm_unlearn.metrics.generation import token_rows
from llm_unlearn.metrics.privleak import (
    RETRAIN_AUC,
    membership_result,
    passages,
    privleak_examples,
)
from llm_unlearn.metrics.registry import EvalContext, MetricResult, register_metric

P = 2


def grad_norm_score(model: nn.Module, ids: list[int], p: float = P) -> float:
    """Mean over the parameter tensors that require a gradient of ‖∂ loss/∂θ_j‖_p, loss the
    passage's mean token NLL."""
    params = [q for q in model.parameters() if q.requires_grad]
    if not params:
        raise ValueError("privleak_gradnorm: the model has no parameter that takes a gradient")
    input_ids = torch.tensor([ids], device=params[0].device)
    with torch.enable_grad():
        logits = model(input_ids=input_ids).logits[0, :-1].float()
        loss = -logits.log_softmax(-1).gather(-1, input_ids[0, 1:, None]).mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    # a tensor outside the graph (theirs: `param.grad is None`) is not counted
    norms = [g.detach().float().norm(p=p) for g in grads if g is not None]
    return torch.stack(norms).mean().item()


@register_metric(
    "privleak_gradnorm",
    requires={"privleak": ("forget", "holdout")},
    benchmark="muse",
    role="forget",
    title="PrivLeak (gradient norm)",
    unit="gradient-norm MIA AUC vs the retrain model, %, near 0 is ideal",
    bootstrap=privleak_examples,
    reference=RETRAIN_AUC,
    transformers_only=True,
    lower_forgets=False,
    floor=0.0,
)
def privleak_gradnorm(model: nn.Module, ctx: EvalContext) -> MetricResult:
    texts, members = passages(ctx)
    ids = token_rows(ctx.tokenizer, texts)
    limit = context_length(model)
    was_training = model.training
    model.eval()
    try:
        scores = [grad_norm_score(model, cut_right(row, limit)) for row in ids]
    finally:
        model.train(was_training)
    cut = cut_record(model, count_over(ids, limit))
    return {**membership_result(scores, members, ctx.privleak_reference_auc, "gradnorm"), **cut}
