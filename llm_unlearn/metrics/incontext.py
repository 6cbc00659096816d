"""In-context probing columns, `incontext-forget-{k}[-s{seed}]`: the full-precision model asked its
forget questions after k other forget QA pairs (`metrics/shots.py`) instead of the benchmark's own
few-shot examples.

The model is not changed; what changes is the evaluation context of its cells (`Column.context`),
and only for the metrics that ask forget QA pairs in a prompt (`Metric.incontext`: MUSE's KnowMem
on forget, TOFU's probability, ROUGE and truth ratio on forget); the other metrics have no cell in
the column. Its recovery reads as a quantizer's,

    recovery = (M(u | k shots) − M(u)) / (M(t) − M(u))        t, u at full precision, own shots

and the retrain model's row is the control: what k forget pairs in the prompt give a model that
never learned the forget set (the shots show the answers' form and their neighbours' facts, so a
rise there is the context's own, and an unlearned model's recovery includes it). It lives with the
metrics, not the audit, because a recipe's `quantize:` list names it and the recipe (a lower layer
than the audit) checks those names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from llm_unlearn.columns import Column, register_column, register_column_family
from llm_unlearn.metrics.registry import EvalContext, Metric
from llm_unlearn.metrics.shots import Shots

#: the `method` of the column's recorded configuration (a quantizer's names its algorithm)
INCONTEXT_METHOD = "incontext"
#: the seed of a name without `-s{seed}`
SEED = 0
_NAME = re.compile(r"incontext-forget-(?P<k>[1-9]\d*)(?:-s(?P<seed>\d+))?")


@register_column_family("incontext")
@register_column("incontext")
class InContext(Column):
    """The column `incontext-forget-{k}[-s{seed}]`: k forget QA pairs as each question's shots."""

    pattern = "incontext-forget-{k}[-s{seed}]"
    is_format = False
    at_full_precision = True
    route = "attack"

    def __init__(self, name: str) -> None:
        found = _NAME.fullmatch(name)
        if found is None:
            raise ValueError(
                f"malformed in-context column {name!r}; expected {self.pattern} with k >= 1 "
                "(shots come from the forget set)"
            )
        self.name = name
        self.shots = Shots(int(found["k"]), int(found["seed"] or SEED), "forget")

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": INCONTEXT_METHOD,
            "shots": self.shots.k,
            "seed": self.shots.seed,
            "source": self.shots.source,
            "evaluation": "full precision, k forget QA pairs in place of the benchmark's own shots",
        }

    def context(self, ctx: EvalContext) -> EvalContext:  # type: ignore[override]
        return dataclasses.replace(ctx, shots=self.shots)

    def evaluates(self, metric: Metric) -> bool:
        return metric.incontext

    @classmethod
    def claims(cls, config: Mapping[str, Any]) -> bool:
        return config.get("method") == INCONTEXT_METHOD
