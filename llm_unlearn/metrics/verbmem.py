"""VerbMem (MUSE M1): how much of a forget passage the model still reproduces verbatim.

For each verbmem/forget record, greedy-decode 128 new tokens from `prompt` and score them against
`gt` cut as MUSE cuts it: the first 128 ids of `gt` tokenized WITH the tokenizer's special tokens,
decoded without them (swj0419/muse_bench, metrics/verbmem.py, lines 22 and 35-38), so 127 text
tokens for a tokenizer that puts a BOS first (Llama's) and 128 for one that does not (GPT-2's);
ROUGE-L F1 (rouge_score, no stemming, as MUSE).
VerbMem = mean F1 × 100; lower = more forgotten. A prompt that leaves no room for the 128 new
tokens in the model's context is cut from the left (BOS kept); `cut_inputs` counts them.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from torch import nn

from llm_unlearn.context import count_over, cut_record, prompt_budget, special_prefix_length
from llm_unlearn.metrics.generation import generate_greedy, token_rows
from llm_unlearn.metrics.registry import EvalContext, MetricResult, register_metric

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer
    from rouge_score.scoring import Score

MAX_NEW_TOKENS = 128


@cache
def _scorer() -> RougeScorer:
    # imported on first use: rouge_score pulls in nltk, scipy and sklearn, seconds of every
    # `evaluate` start before its first forward pass, whatever its metrics
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(gold: str, output: str) -> Score:
    """ROUGE-L of `output` against `gold`: precision, recall, fmeasure in [0, 1].

    recall = LCS / len(gold words), precision = LCS / len(output words), F1 their harmonic mean;
    words are rouge_score's (lower-cased alphanumeric runs).
    """
    return _scorer().score(gold, output)["rougeL"]


def mean_or_nan(xs: list[float]) -> float:
    # nan, not an exception, when ctx.limit=0 or a split is empty: the report shows it as missing
    return sum(xs) / len(xs) if xs else float("nan")


@register_metric(
    "verbmem",
    requires={"verbmem": ("forget",)},
    benchmark="muse",
    role="forget",
    default_rank=0,
    title="VerbMem on forget",
    unit="ROUGE-L F1 × 100, lower = more forgotten",
    new_tokens=MAX_NEW_TOKENS,
    floor=0.0,
)
def verbmem(model: nn.Module, ctx: EvalContext) -> MetricResult:
    records = ctx.corpus.get("verbmem", "forget")[: ctx.limit]
    tok = ctx.tokenizer
    prompts = [r["prompt"] for r in records]
    golds = [
        tok.decode(tok(r["gt"])["input_ids"][:MAX_NEW_TOKENS], skip_special_tokens=True) for r in records
    ]
    ids = token_rows(tok, prompts)
    budget = prompt_budget(model, MAX_NEW_TOKENS, special_prefix_length(tok), "verbmem")
    outputs = generate_greedy(model, tok, ids, MAX_NEW_TOKENS, ctx.batch_size)
    by_index = {
        i: {"score": rouge_l(gold, out).fmeasure * 100, "prompt": prompt, "gold": gold, "output": out}
        for i, (prompt, gold, out) in enumerate(zip(prompts, golds, outputs, strict=True))
    }
    return {
        "agg_value": mean_or_nan([v["score"] for v in by_index.values()]),
        **cut_record(model, count_over(ids, budget)),
        "value_by_index": by_index,
    }
