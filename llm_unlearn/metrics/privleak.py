"""PrivLeak (MUSE M3): can a membership-inference attack still tell forget passages from holdout ones.

Each passage gets a score from the model's token log-probs, oriented so that HIGHER = LESS likely
a training member (a memorised passage has high log-probs, hence a low score):
  loss             = -mean_t log p(x_t | x_<t)
  zlib             = loss / len(zlib.compress(text.encode("utf-8")))   (MUSE's "PPL/zlib": the
                     mean token NLL over the zlib-compressed byte length, as Carlini et al. 2021)
  min_k            = -mean of the lowest k = 40 % token log-probs (at least one token; MUSE's default)
  min_k_plus_plus  = -mean of the lowest 40 % Min-K%++ token z-scores (Zhang et al. 2024)
AUC = roc_auc_score(y, s) with y = 1 for privleak/forget and 0 for privleak/holdout passages, so a
model that memorised the forget set has AUC near 0 and one that never saw it about 0.5.
PrivLeak = (AUC - AUC_ref) / AUC_ref × 100, AUC_ref = the retrain model's AUC (ideal 0.5 without
one): near 0 is ideal, large negative = under-unlearned, large positive = over-unlearned.
Passages are cut to their first `context_length(model)` tokens (BOS kept); `cut_inputs` counts them.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from llm_unlearn.context import context_length, count_over, cut_record
from llm_unlearn.metrics.bootstrap import Examples, register_statistic, weighted_auc
from llm_unlearn.metrics.generation import token_logprobs, token_min_k_plus_plus_zscores, token_rows
from llm_unlearn.metrics.registry import (
    EvalContext,
    MetricResult,
    ReferenceFlag,
    RetrainReference,
    register_metric,
)

K = 0.4
IDEAL_AUC = 0.5


def loss_score(logprobs: torch.Tensor) -> float:
    """-mean log p: the passage's mean token NLL."""
    return -logprobs.mean().item()


def zlib_score(logprobs: torch.Tensor, text: str) -> float:
    """loss / zlib-compressed length in bytes: discounts passages that are merely repetitive."""
    return loss_score(logprobs) / len(zlib.compress(text.encode("utf-8")))


def min_k_score(values: torch.Tensor, k: float = K) -> float:
    """-mean of the lowest floor(k·n) values (at least one) of n token log-probs or z-scores."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    if values.numel() == 0:
        raise ValueError("a passage has no scored tokens (it tokenizes to at most one token)")
    n = max(1, int(values.numel() * k))
    return -values.sort().values[:n].mean().item()


def membership_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC of the scores with members labelled 1: 0 when every member scores lowest, 0.5 at chance."""
    # sklearn is imported on first use: a second of every `evaluate` start before its first forward
    from sklearn.metrics import roc_auc_score

    y = [1] * len(member_scores) + [0] * len(nonmember_scores)
    return float(roc_auc_score(y, [*member_scores, *nonmember_scores]))


def privleak_value(auc: float, reference_auc: float) -> float:
    """(AUC - AUC_ref) / AUC_ref × 100."""
    return (auc - reference_auc) / reference_auc * 100


PerToken = Callable[..., list[torch.Tensor]]
_SCORES: dict[str, tuple[PerToken, Callable[[torch.Tensor, str], float]]] = {
    "loss": (token_logprobs, lambda lp, _text: loss_score(lp)),
    "zlib": (token_logprobs, zlib_score),
    "min_k": (token_logprobs, lambda lp, _text: min_k_score(lp, K)),
    "min_k_plus_plus": (token_min_k_plus_plus_zscores, lambda z, _text: min_k_score(z, K)),
}


def passages(ctx: EvalContext) -> tuple[list[str], int]:
    """The privleak/forget passages then the holdout ones (each cut to ctx.limit), and how many
    of them are forget members."""
    forget = ctx.corpus.get("privleak", "forget")[: ctx.limit]
    holdout = ctx.corpus.get("privleak", "holdout")[: ctx.limit]
    return [*forget, *holdout], len(forget)


def membership_result(scores: Sequence[float], members: int, ref: float | None, kind: str) -> MetricResult:
    """A membership attack's result: its AUC, PrivLeak against the retrain model's AUC `ref` (None:
    the ideal 0.5), each passage's score; the first `members` scores are the forget passages'."""
    auc = membership_auc(scores[:members], scores[members:])
    ref_auc = IDEAL_AUC if ref is None else ref
    return {
        "agg_value": privleak_value(auc, ref_auc),
        "auc": auc,
        "reference_auc": ref_auc,
        "reference": "ideal-0.5" if ref is None else "retrain",
        "mia_score": kind,
        "value_by_index": {i: {"score": s, "member": i < members} for i, s in enumerate(scores)},
    }


def _privleak(model: nn.Module, ctx: EvalContext, kind: str) -> MetricResult:
    texts, members = passages(ctx)
    per_token, reduce = _SCORES[kind]
    ids = token_rows(ctx.tokenizer, texts)
    values = per_token(model, ctx.tokenizer, ids, ctx.batch_size)  # cuts each passage to the context
    scores = [reduce(v, text) for v, text in zip(values, texts, strict=True)]
    return {
        **membership_result(scores, members, ctx.privleak_reference_auc, kind),
        **cut_record(model, count_over(ids, context_length(model))),
    }


# --- what the audit asks: its bootstrap and its reference ---------------------------------------


@register_statistic("privleak")
def privleak_statistic(found: Examples, counts: np.ndarray) -> np.ndarray:
    """PrivLeak of each resample: the AUC recomputed on the resampled passages (`weighted_auc`, ties
    ½ as sklearn's), AUC_ref held FIXED at the cell's `reference_auc`: the interval is the
    uncertainty of this model's AUC on these passages, not that of the retrain model."""
    return privleak_value(weighted_auc(found.scores, found.strata.astype(bool), counts), found.reference)


def privleak_examples(
    keys: tuple[str, ...], rows: Sequence[Mapping[str, Any]], result: Mapping[str, Any]
) -> Examples | None:
    """Passages resampled within each class (forget members 1, holdout non-members 0, each to its own
    count), so both classes are in every resample; None when one class is missing (no AUC)."""
    member = np.array([bool(r.get("member")) for r in rows])
    if member.all() or not member.any():
        return None
    scores = np.array([float(r["score"]) for r in rows])
    return Examples(keys, scores, "privleak", member.astype(int), float(result["reference_auc"]))


def _given(ctx: EvalContext, reference_auc: float | None) -> EvalContext:
    return dataclasses.replace(ctx, privleak_reference_auc=reference_auc)


def _own(value: MetricResult) -> None:
    # The retrain model at full precision defines the reference: its PrivLeak is 0 by definition.
    value.update(agg_value=privleak_value(value["auc"], value["auc"]), reference_auc=value["auc"])
    value["reference"] = "retrain"


def parse_auc(text: str) -> float:
    """An AUC given by hand, in (0, 1] (nan refused): AUC_ref of the PrivLeak formula."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:  # also refuses nan
        raise ValueError(f"an AUC in (0, 1], got {text}")
    return value


#: the retrain model's membership AUC is AUC_ref of every other model's cell
RETRAIN_AUC = RetrainReference(
    take=lambda retrain: retrain["auc"],
    given=_given,
    own=_own,
    flag=ReferenceFlag(
        "--reference-auc", "the retrain model's AUC in (0, 1], PrivLeak's reference", parse=parse_auc
    ),
)

_REQUIRES = {"privleak": ("forget", "holdout")}
for _name, _kind, _rank, _title in [
    ("privleak", "min_k", 3, "PrivLeak"),
    ("privleak_loss", "loss", None, ""),
    ("privleak_zlib", "zlib", None, ""),
    ("privleak_min_k_plus_plus", "min_k_plus_plus", None, ""),
]:
    # MUSE's sign: a target that memorised the forget set sits near −100, the retrain model at 0 by
    # definition, so PrivLeak rises as a model forgets (past 0: over-unlearned); floor: a model that
    # knows nothing scores members and non-members alike, AUC 0.5 = its reference, PrivLeak 0.
    # The other scores' reports keep their names as titles (as before titles were registered).
    register_metric(
        _name,
        requires=_REQUIRES,
        benchmark="muse",
        role="forget",
        default_rank=_rank,
        title=_title,
        unit="Min-K% Prob AUC vs the retrain model, %, near 0 is ideal" if _title else "",
        bootstrap=privleak_examples,
        reference=RETRAIN_AUC,
        lower_forgets=False,
        floor=0.0,
    )(partial(_privleak, kind=_kind))
