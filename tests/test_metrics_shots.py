"""In-context shots: k other forget QA pairs per question, seeded, never the asked question."""

from __future__ import annotations

import random

import pytest

from llm_unlearn.errors import UserError
from llm_unlearn.metrics.shots import Shots

PAIRS = [{"question": f"Q{i}?", "answer": f"A{i}"} for i in range(6)]


def test_each_question_gets_k_other_forget_pairs_and_never_its_own() -> None:
    shots = Shots(3, seed=7)
    for i, asked in enumerate(PAIRS):
        drawn = shots.draw(PAIRS, i)
        assert len(drawn) == 3 and len({p["question"] for p in drawn}) == 3
        assert all(p in PAIRS for p in drawn) and asked not in drawn


def test_the_same_seed_draws_the_same_shots_as_the_formula_says() -> None:
    # the docstring's formula, written out: one generator per question, seeded "seed:index"
    others = [p for p in PAIRS if p["question"] != "Q2?"]
    expected = random.Random("7:2").sample(others, 3)
    assert Shots(3, 7).draw(PAIRS, 2) == expected == Shots(3, 7).draw(list(PAIRS), 2)
    draws = {tuple(p["question"] for p in Shots(3, seed).draw(PAIRS, 2)) for seed in range(5)}
    assert len(draws) > 1  # the seed matters


def test_a_duplicate_of_the_asked_question_is_no_shot() -> None:
    pairs = [*PAIRS[:3], {"question": "Q0?", "answer": "A0 again"}]
    assert all(p["question"] != "Q0?" for p in Shots(2, 0).draw(pairs, 0))


def test_more_shots_than_other_pairs_is_refused_in_one_line() -> None:
    with pytest.raises(UserError, match=r"only 5 other QA pairs .* at most 5 shots") as err:
        Shots(6, 0).draw(PAIRS, 0)
    assert "\n" not in str(err.value)
