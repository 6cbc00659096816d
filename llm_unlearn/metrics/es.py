"""Extraction strength (ES) on MUSE's verbmem forget split: how short a prefix of the answer the model
needs before its greedy teacher-forced predictions reproduce all the rest (Carlini et al. 2021's
extraction, as open-unlearning's memorization metric).

Reference: open-unlearning, `src/evals/metrics/memorization.py::extraction_strength` (locuslab/
open-unlearning @ d3d7cf9e), on MUSE's verbmem forget split
(`configs/eval/muse_metrics/extraction_strength.yaml`). With ŷ_t the greedy (argmax) prediction of
answer token y_t given the prompt and y_<t, and |y| the answer's tokens,

    k_i  = min {k ∈ 0..|y|−1 : ŷ_k.. = y_k..}, or |y| − 1 when no suffix matches
    ES_i = 1 − k_i / |y|                                                    ES = mean_i ES_i

exactly as their loop leaves `k` (`for k in range(valid_len): ... break`): a model that reproduces
the whole answer scores 1, one that misses even its last token 1/|y|, never 0. A record whose `gt`
has no token scores 0, as theirs does. The tokens and teacher forcing are exact memorization's
(`em.answer_hits`: `gt` cut to 128 text tokens, a prompt cut from the left to fit the context).
"""

from __future__ import annotations

import torch
from torch import nn

from llm_unlearn.context import cut_record
from llm_unlearn.metrics.em import answer_hits
from llm_unlearn.metrics.registry import EvalContext, MetricResult, register_metric
from llm_unlearn.metrics.verbmem import mean_or_nan


def extraction_strength_of(hits: torch.Tensor) -> float:
    """1 − k/|y| for one answer's greedy hits (bool, one per answer token); 0 for an empty answer."""
    n = hits.numel()
    if n == 0:
        return 0.0
    misses = (~hits).nonzero()
    # the suffix after the last miss matches; open-unlearning's loop never goes past k = n − 1
    k = 0 if misses.numel() == 0 else min(misses[-1].item() + 1, n - 1)
    return 1 - k / n


@register_metric(
    "extraction_strength",
    requires={"verbmem": ("forget",)},
    benchmark="muse",
    role="forget",
    title="Extraction strength on forget",
    unit="1 − shortest answer prefix after which greedy predictions match, lower = more forgotten",
    point=0.01,
    floor=0.0,
)
def extraction_strength(model: nn.Module, ctx: EvalContext) -> MetricResult:
    records, hits, cut = answer_hits(model, ctx)
    by_index = {
        i: {"score": extraction_strength_of(h), "prompt": r["prompt"], "gold": r["gt"]}
        for i, (r, h) in enumerate(zip(records, hits, strict=True))
    }
    return {
        "agg_value": mean_or_nan([v["score"] for v in by_index.values()]),
        **cut_record(model, cut),
        "value_by_index": by_index,
    }
