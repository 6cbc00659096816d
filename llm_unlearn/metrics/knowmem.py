"""KnowMem (MUSE M2 on forget QA, M4 on retain QA): can the model still answer questions about it.

Prompt = every ICL pair as `Question: {q}\\nAnswer: {a}\\n\\n`, then `Question: {q}\\nAnswer: `;
greedy, 32 new tokens; the output is cut before the first `\\n\\n`, `\\nQuestion` or `Question:`
and stripped; ROUGE-L F1 against the answer. KnowMem = mean F1 × 100 (MUSE's number); the mean
ROUGE-L recall × 100 is reported too. Keep the formats: they make the numbers comparable with MUSE's.
"""

from __future__ import annotations

from torch import nn

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


def _knowmem(model: nn.Module, ctx: EvalContext, qa_split: str, icl_split: str) -> MetricResult:
    icl = ctx.corpus.get("knowmem", icl_split)
    records = ctx.corpus.get("knowmem", qa_split)[: ctx.limit]
    prompts = [build_prompt(icl, r["question"]) for r in records]
    outputs = [
        cut_answer(o) for o in generate_greedy(model, ctx.tokenizer, prompts, MAX_NEW_TOKENS, ctx.batch_size)
    ]
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
        "value_by_index": by_index,
    }


@register_metric("knowmem_forget", requires={"knowmem": ("forget_qa", "forget_qa_icl")}, forget=True)
def knowmem_forget(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """KnowMem on the forget QA (M2): lower = more forgotten."""
    return _knowmem(model, ctx, "forget_qa", "forget_qa_icl")


@register_metric("knowmem_retain", requires={"knowmem": ("retain_qa", "retain_qa_icl")})
def knowmem_retain(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """KnowMem on the retain QA (M4, utility): higher = more preserved."""
    return _knowmem(model, ctx, "retain_qa", "retain_qa_icl")
