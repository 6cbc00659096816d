"""General utility through lm-evaluation-harness (EleutherAI; `pip install lm-eval`): the `lm_eval` metric.

The audited model itself, as the cell has it (full precision or quantized), is wrapped in lm-eval's
`HFLM(pretrained=model, tokenizer=tokenizer)`; nothing is reloaded by name. The tasks come from the
recipe's `lm_eval` section, handed over as `ctx.extra["lm_eval"]` ({tasks, limit, include_path,
num_fewshot}); `include_path` adds a folder of task YAML files (lm-eval's TaskManager). Each task
reports its headline metric: acc_norm where the task has one (ARC, HellaSwag), else acc (MMLU,
TruthfulQA mc1/mc2), else its first metric. agg_value = the mean over the listed tasks;
value_by_index["<task>/<doc_id>"]["score"] = that metric on one example of a (sub)task, so a
bootstrap resamples the examples within each task.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from torch import nn

from llm_unlearn.errors import UserError
from llm_unlearn.metrics.generation import _eval_mode
from llm_unlearn.metrics.registry import EvalContext, MetricResult, register_metric

SETTINGS_KEY = "lm_eval"
_PREFERRED = ("acc_norm", "acc")


def headline(metrics: dict[str, Any]) -> tuple[str, float]:
    """The task's headline (name, value) from lm-eval's "<metric>,<filter>" result keys."""
    values = {
        key.split(",")[0]: value
        for key, value in metrics.items()
        if "," in key and "_stderr" not in key and isinstance(value, (int, float))
    }
    if not values:
        raise UserError(f"lm_eval: a task reported no numeric metric ({', '.join(metrics) or 'nothing'})")
    name = next((n for n in _PREFERRED if n in values), next(iter(values)))
    return name, float(values[name])


@cache
def _task_manager(include_path: str | None) -> Any:
    """lm-eval's task index, built once per process: indexing every task YAML takes seconds, and an
    audit evaluates many cells."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


@register_metric(
    "lm_eval",
    requires={},
    role="utility",
    title="lm-evaluation-harness",
    unit="mean accuracy over the recipe's tasks",
    settings=SETTINGS_KEY,
    transformers_only=True,
    point=0.01,
)
def lm_eval_metric(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """Mean headline metric of the recipe's lm-eval tasks (higher = more general utility kept)."""
    settings = ctx.extra.get(SETTINGS_KEY)
    if not settings or not settings.get("tasks"):
        raise UserError("lm_eval: the recipe has no lm_eval section; add lm_eval: {tasks: [arc_easy, ...]}")
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError("lm_eval: the metric needs lm-evaluation-harness; pip install lm-eval") from None
    tasks = list(settings["tasks"])
    manager = _task_manager(settings.get("include_path"))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"lm_eval.tasks: unknown lm-eval task(s) {', '.join(unknown)}; see `lm-eval ls tasks`"
        )
    with _eval_mode(model):  # HFLM puts the model in eval mode; give it back as it came
        lm = HFLM(pretrained=model, tokenizer=ctx.tokenizer, batch_size=ctx.batch_size)
        out = simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=settings.get("num_fewshot", 0),
            limit=settings.get("limit"),
            task_manager=manager,
            log_samples=True,
            bootstrap_iters=0,  # the audit bootstraps itself, from value_by_index
        )
    per_task = {task: headline(out["results"][task]) for task in tasks}
    by_index = {}
    for task, samples in out.get("samples", {}).items():
        metric = headline(out["results"][task])[0]
        for sample in samples:
            by_index[f"{task}/{sample['doc_id']}"] = {"task": task, "score": float(sample[metric])}
    return {
        "agg_value": sum(v for _, v in per_task.values()) / len(per_task),
        "tasks": {task: {"metric": name, "value": value} for task, (name, value) in per_task.items()},
        "value_by_index": by_index,
    }
