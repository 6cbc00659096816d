"""KnowMem (MUSE M2 on forget QA, M4 on retain QA): can the model still answer questions about it.

Prompt = every ICL pair as `Question: {q}\\nAnswer: {a}\\n\\n`, then `Question: {q}\\nAnswer: `;
greedy, 32 new tokens; the output is cut before the first `\\n\\n`, `\\nQuestion` or `Question:`
and stripped; ROUGE-L F1 against the answer. KnowMem = mean F1 × 100 (MUSE's number); the mean
ROUGE-L recall × 100 is reported too. Keep the formats: they make the numbers comparable with MUSE's.
The format is MUSE's (swj0419/muse_bench, metrics/knowmem.py, which eval.py calls with the ICL
questions and answers). With `ctx.shots` (an in-context column, `metrics/shots.py`) question i's
ICL pairs are k other forget QA pairs drawn for it, in the same format, in place of the
benchmark's own. A prompt that leaves no room for the 32 new tokens in the model's context loses
whole ICL pairs from the front, so the question stays intact; only a question that does not fit
alone is cut from the left (BOS kept). `cut_inputs` counts the prompts cut either way.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_unlearn.context import cut_left, cut_record, prompt_budget, special_prefix_length
from llm_unlearn.metrics.generation import generate_greedy
from llm_unlearn.metrics.registry import EvalContext, MetricResult, register_metric
from llm_unlearn.metrics.verbmem import mean_or_nan, rouge_l

MAX_NEW_TOKENS = 32
STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")


def build_prompt(icl: list[dict[str, str]], question: str) -> str:
    """The few-shot prompt: the ICL question/answer pairs, then the open question."""
    shots = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in icl)
    return f"{shots}Question: {question}\nAnswer: "


def cut_answer(output: str) -> str:
    """`output` up to the earliest stop string (the model moving on to a next question), stripped."""
    end = min((i for i in (output.find(s) for s in STOP_STRINGS) if i >= 0), default=len(output))
    return output[:end].strip()


def fit_prompt(
    tokenizer: PreTrainedTokenizerBase, icl: list[dict[str, str]], question: str, budget: int | None
) -> tuple[list[int], int, bool]:
    """The prompt's token ids within `budget` tokens, how many ICL pairs it lost, whether it was cut.

    Drops the fewest ICL pairs from the front that make it fit; with every pair gone and the
    question still too long, cuts the question from the left, keeping the leading BOS.
    """
    for dropped in range(len(icl) + 1):
        ids = tokenizer(build_prompt(icl[dropped:], question))["input_ids"]
        if budget is None or len(ids) <= budget:
            return ids, dropped, dropped > 0
    return cut_left(ids, budget, special_prefix_length(tokenizer)), len(icl), True


def icl_pairs(ctx: EvalContext, qa_split: str, icl_split: str) -> list[list[dict[str, str]]]:
    """Each asked question's ICL pairs: the benchmark's own, or `ctx.shots` drawn from the QA pairs."""
    pairs = ctx.corpus.get("knowmem", qa_split)
    asked = range(len(pairs[: ctx.limit]))
    if ctx.shots is None:
        return [ctx.corpus.get("knowmem", icl_split) for _ in asked]
    return [ctx.shots.draw(pairs, i) for i in asked]


def _knowmem(model: nn.Module, ctx: EvalContext, qa_split: str, icl_split: str) -> MetricResult:
    icls = icl_pairs(ctx, qa_split, icl_split)
    records = ctx.corpus.get("knowmem", qa_split)[: ctx.limit]
    tok = ctx.tokenizer
    budget = prompt_budget(model, MAX_NEW_TOKENS, special_prefix_length(tok), f"knowmem ({qa_split})")
    fitted = [fit_prompt(tok, icl, r["question"], budget) for icl, r in zip(icls, records, strict=True)]
    # prompts that kept the same ICL pairs share them as a prefix, whose cache is computed once;
    # shots drawn per question share none, so they go in one group without a shared prefix
    groups: dict[int, list[int]] = {}
    for i, (_, dropped, _) in enumerate(fitted):
        groups.setdefault(0 if ctx.shots else dropped, []).append(i)
    outputs = [""] * len(records)
    for idx in groups.values():
        prompts = [fitted[i][0] for i in idx]
        generated = generate_greedy(
            model, tok, prompts, MAX_NEW_TOKENS, ctx.batch_size, share_prefix=ctx.shots is None
        )
        for i, out in zip(idx, generated, strict=True):
            outputs[i] = cut_answer(out)
    by_index = {}
    for i, (r, out) in enumerate(zip(records, outputs, strict=True)):
        score = rouge_l(r["answer"], out)
        by_index[i] = {
            "score": score.fmeasure * 100,
            "recall": score.recall * 100,
            "question": r["question"],
            "gold": r["answer"],
            "output": out,
        }
    return {
        "agg_value": mean_or_nan([v["score"] for v in by_index.values()]),
        "recall": mean_or_nan([v["recall"] for v in by_index.values()]),
        **cut_record(model, sum(cut for _, _, cut in fitted)),
        "value_by_index": by_index,
    }


@register_metric(
    "knowmem_forget",
    requires={"knowmem": ("forget_qa", "forget_qa_icl")},
    benchmark="muse",
    role="forget",
    default_rank=1,
    title="KnowMem on forget",
    unit="ROUGE-L F1 × 100, lower = more forgotten",
    paired_with="knowmem_retain",
    new_tokens=MAX_NEW_TOKENS,
    floor=0.0,
    incontext=True,
)
def knowmem_forget(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """KnowMem on the forget QA (M2): lower = more forgotten."""
    return _knowmem(model, ctx, "forget_qa", "forget_qa_icl")


@register_metric(
    "knowmem_retain",
    requires={"knowmem": ("retain_qa", "retain_qa_icl")},
    benchmark="muse",
    role="retain",
    default_rank=2,
    title="KnowMem on retain",
    unit="ROUGE-L F1 × 100, higher = more utility kept",
    new_tokens=MAX_NEW_TOKENS,
)
def knowmem_retain(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """KnowMem on the retain QA (M4, utility): higher = more preserved."""
    return _knowmem(model, ctx, "retain_qa", "retain_qa_icl")
