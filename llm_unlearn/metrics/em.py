"""Exact memorization (EM) on MUSE's verbmem forget split: the share of answer tokens that the model's
greedy next-token prediction reproduces under teacher forcing.

Reference: open-unlearning, `src/evals/metrics/memorization.py::exact_memorization` (locuslab/
open-unlearning @ d3d7cf9e), with `tokenwise_vocab_logprobs` in `src/evals/metrics/utils.py`, on
MUSE's verbmem forget split (`configs/eval/muse_metrics/exact_memorization.yaml`). Per record, the
prompt and its `gt` are one sequence, only `gt`'s tokens are scored, and

    EM_i = (1/|gt|) · Σ_t [argmax_v p(v | prompt, gt_<t) = gt_t]        EM = mean_i EM_i

on the scale [0, 1] as open-unlearning reports it (one point = 0.01, as TOFU's values here); lower =
more forgotten, 0 = no answer token reproduced. open-unlearning's collator appends EOS to the answer
and then drops the last labelled position ("-1 to ignore eos prediction"), so it too scores exactly
the answer tokens; we append no EOS. `gt` is cut to its first 128 text tokens
(`verbmem.MAX_NEW_TOKENS`; no BOS counted, unlike VerbMem's MUSE gold); a prompt that leaves no
room for them in the model's context is cut from the left, its special prefix (BOS) kept, and
counted in `cut_inputs`. A record whose `gt` has no token is left out, as open-unlearning leaves
out its None scores.
"""

from __future__ import annotations

import torch
from torch import nn

from llm_unlearn.context import context_length, cut_record, special_prefix_length
from llm_unlearn.metrics.generation import _per_token
from llm_unlearn.metrics.registry import EvalContext, MetricResult, register_metric
from llm_unlearn.metrics.verbmem import MAX_NEW_TOKENS, mean_or_nan


def _greedy_hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per position: whether the greedy (argmax) next token equals the gold next token."""
    return (logits.argmax(-1) == targets).cpu()


def answer_hits(model: nn.Module, ctx: EvalContext) -> tuple[list[dict], list[torch.Tensor], int]:
    """The verbmem/forget records, per record whether each of its `gt` tokens is the greedy
    prediction under teacher forcing (bool, one per gt token, empty for an empty gt), and how many
    prompts were cut to fit the context: what EM and ES (metrics/es.py) both read."""
    records = ctx.corpus.get("verbmem", "forget")[: ctx.limit]
    tok = ctx.tokenizer
    keep, limit = special_prefix_length(tok), context_length(model)
    rows, answers, cut = [], [], 0
    for r in records:
        prompt = tok(r["prompt"])["input_ids"]
        gt = tok(r["gt"], add_special_tokens=False)["input_ids"][:MAX_NEW_TOKENS]
        if limit is not None and len(prompt) + len(gt) > limit:
            room = max(limit - len(gt) - keep, 1)  # at least one prompt token predicts gt's first
            prompt, cut = prompt[:keep] + prompt[keep:][-room:], cut + 1
        rows.append(prompt + gt)
        answers.append(len(gt))
    hits = _per_token(model, tok, rows, ctx.batch_size, None, _greedy_hits)
    return records, [h[h.numel() - n :] for h, n in zip(hits, answers, strict=True)], cut


@register_metric(
    "exact_memorization",
    requires={"verbmem": ("forget",)},
    benchmark="muse",
    role="forget",
    title="Exact memorization on forget",
    unit="share of gt tokens predicted greedily under teacher forcing, lower = more forgotten",
    point=0.01,
    floor=0.0,
)
def exact_memorization(model: nn.Module, ctx: EvalContext) -> MetricResult:
    records, hits, cut = answer_hits(model, ctx)
    by_index = {
        i: {"score": h.float().mean().item(), "prompt": r["prompt"], "gold": r["gt"]}
        for i, (r, h) in enumerate(zip(records, hits, strict=True))
        if h.numel() > 0
    }
    return {
        "agg_value": mean_or_nan([v["score"] for v in by_index.values()]),
        **cut_record(model, cut),
        "value_by_index": by_index,
    }
