"""PrivLeak by the reference-model attack: a passage is a member when the audited model finds it
much likelier than a reference model that never trained on it does (Carlini et al. 2021's
reference-model calibration; open-unlearning's `mia_reference`).

Reference: open-unlearning, `src/evals/metrics/mia/reference.py::ReferenceAttack` (locuslab/
open-unlearning @ d3d7cf9e); its MUSE config takes the RETRAIN model as the reference
(`configs/eval/muse_metrics/mia_reference.yaml`: `reference_model_path: muse-bench/MUSE-…_retrain`),
and so does this metric. Per passage x, with loss(x) = −mean_t log p(x_t | x_<t) (privleak's `loss`),

    score(x) = loss_model(x) − loss_retrain(x)

higher = less likely a member, as every privleak score. AUC as `privleak` (members labelled 1). The
retrain model scores every passage 0 against itself, so its AUC is 0.5 by construction: PrivLeak =
(AUC − 0.5) / 0.5 × 100. The audit evaluates the retrain model first; its full-precision cell keeps
its per-passage losses (`losses`), which every other cell takes as loss_retrain (RetrainReference),
so no second model is loaded. Without a retrain model the value is nan, as TOFU's forget quality.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from llm_unlearn.context import context_length, count_over, cut_record
from llm_unlearn.metrics.bootstrap import Examples
from llm_unlearn.metrics.generation import token_logprobs, token_rows
from llm_unlearn.metrics.privleak import IDEAL_AUC, loss_score, membership_result, passages, privleak_examples
from llm_unlearn.metrics.registry import EvalContext, MetricResult, RetrainReference, register_metric

#: where a cell's context carries the retrain model's per-passage losses
REFERENCE_KEY = "privleak_reference_losses"


def reference_scores(losses: Sequence[float], reference_losses: Sequence[float]) -> list[float]:
    """loss_model(x) − loss_reference(x) per passage."""
    if len(losses) != len(reference_losses):
        raise ValueError(f"{len(losses)} passages but {len(reference_losses)} reference losses")
    return [a - b for a, b in zip(losses, reference_losses, strict=True)]


def _scored(losses: Sequence[float], reference_losses: Sequence[float], members: int) -> MetricResult:
    # AUC_ref is the retrain model's AUC against itself: 0.5 by construction
    return membership_result(reference_scores(losses, reference_losses), members, IDEAL_AUC, "reference")


def reference_examples(
    keys: tuple[str, ...], rows: Sequence[Mapping[str, Any]], result: Mapping[str, Any]
) -> Examples | None:
    """privleak's strata; None for a cell that had no reference (no scores to resample)."""
    return None if result.get("reference") is None else privleak_examples(keys, rows, result)


def _given(ctx: EvalContext, losses: list[float] | None) -> EvalContext:
    return ctx if losses is None else dataclasses.replace(ctx, extra={**ctx.extra, REFERENCE_KEY: losses})


def _own(value: MetricResult) -> None:
    # the retrain model at full precision is the reference model: every score 0, AUC 0.5, PrivLeak 0
    members = sum(bool(r["member"]) for r in value["value_by_index"].values())
    value.update(_scored(value["losses"], value["losses"], members))


@register_metric(
    "privleak_reference",
    requires={"privleak": ("forget", "holdout")},
    benchmark="muse",
    role="forget",
    title="PrivLeak (reference model)",
    unit="loss − retrain model's loss MIA AUC, %, near 0 is ideal",
    bootstrap=reference_examples,
    # the retrain model's per-passage losses are every other cell's reference
    reference=RetrainReference(take=lambda retrain: retrain["losses"], given=_given, own=_own),
    lower_forgets=False,
    floor=0.0,
)
def privleak_reference(model: nn.Module, ctx: EvalContext) -> MetricResult:
    texts, members = passages(ctx)
    ids = token_rows(ctx.tokenizer, texts)
    losses = [loss_score(lp) for lp in token_logprobs(model, ctx.tokenizer, ids, ctx.batch_size)]
    cut = cut_record(model, count_over(ids, context_length(model)))
    reference = ctx.extra.get(REFERENCE_KEY)
    if reference is None:
        rows = {i: {"loss": loss, "member": i < members} for i, loss in enumerate(losses)}
        return {"agg_value": float("nan"), "reference": None, "losses": losses, **cut, "value_by_index": rows}
    return {**_scored(losses, reference, members), "losses": losses, **cut}
