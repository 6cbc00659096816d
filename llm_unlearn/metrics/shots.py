"""In-context shots drawn from the forget set: each question asked after k other forget QA pairs.

A few QA pairs of the forget set in the prompt can bring "forgotten" answers back (issue 29 cites
arXiv 2411.12103 for an order-of-magnitude rise; Lynch et al. 2024, "Eight Methods to Evaluate
Robust Unlearning in LLMs", arXiv 2402.16835, extract more than a baseline's knowledge from an
unlearned model with prompting of this kind). A metric that takes shots (`Metric.incontext`)
asks question i of its forget QA pairs P after the k pairs

    shots(i) = random.Random(f"{seed}:{i}").sample([p ∈ P : p.question ≠ q_i], k)

in place of its benchmark's own in-context examples, in the benchmark's own prompt format: the
asked question is never among its own shots, and the same seed gives the same prompts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm_unlearn.errors import UserError


@dataclass(frozen=True)
class Shots:
    """`k` forget QA pairs per question, drawn with `seed` from the other pairs of `source`."""

    k: int
    seed: int
    #: the set the pairs come from: the metric's own forget QA pairs
    source: str = "forget"

    def draw(self, pairs: Sequence[dict[str, Any]], index: int) -> list[dict[str, Any]]:
        """The shots of question `index` of `pairs`: k of the pairs whose question is not its own
        (a duplicate of the asked question would give its answer away), in the drawn order."""
        asked = pairs[index]["question"]
        others = [p for p in pairs if p["question"] != asked]
        if len(others) < self.k:
            raise UserError(
                f"in-context {self.k} shots: the {self.source} set has only {len(others)} other QA "
                f"pairs for {asked[:60]!r}; ask for at most {len(others)} shots"
            )
        # one generator per question: a question's shots do not depend on which others are asked
        return random.Random(f"{self.seed}:{index}").sample(others, self.k)
