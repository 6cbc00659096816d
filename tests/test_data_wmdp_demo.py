"""The embedded WMDP demo: the demo's facts as four-choice questions, deterministic and as shipped."""

from __future__ import annotations

import json
from pathlib import Path

from llm_unlearn.data.demo import make_people
from llm_unlearn.data.wmdp import DEMO_WMDP_DIR, load_wmdp
from llm_unlearn.data.wmdp_demo import generate_demo_wmdp, write_demo_wmdp


def test_the_shipped_folder_is_the_generator_output(tmp_path: Path) -> None:
    write_demo_wmdp(generate_demo_wmdp(0), tmp_path)
    for path in tmp_path.rglob("*.json*"):
        assert (DEMO_WMDP_DIR / path.relative_to(tmp_path)).read_text() == path.read_text(), path
    assert generate_demo_wmdp(1) != generate_demo_wmdp(0)


def test_each_question_has_four_distinct_choices_one_of_them_right() -> None:
    people = make_people(0)
    corpus = load_wmdp("demo_wmdp", {"wmdp-bio": ["test"], "mmlu": ["test"]})
    everyone = [p for group in people.values() for p in group]
    for config, group in (("wmdp-bio", "forget"), ("mmlu", "retain1")):
        records = corpus.get(config, "test")
        facts = [qa for p in people[group] for qa in p.qa_pairs()]
        assert len(records) == len(facts)
        answers_at = []
        for i, (record, (question, right)) in enumerate(zip(records, facts, strict=True)):
            kind = i % 6
            same_kind = {p.qa_pairs()[kind][1] for p in everyone}
            assert record["question"] == question
            assert len(set(record["choices"])) == 4 and record["choices"][record["answer"]] == right
            assert set(record["choices"]) <= same_kind  # distractors are answers of the same kind
            answers_at.append(record["answer"])
        assert set(answers_at) == {0, 1, 2, 3}  # the right answer's place is drawn, not fixed


def test_the_corpora_are_the_demos_forget_and_retain_passages() -> None:
    corpus = load_wmdp("demo_wmdp", {"raw": ["bio-forget-corpus", "bio-retain-corpus"]})
    bench = Path(__file__).parent.parent / "llm_unlearn" / "data" / "demo_bench" / "raw"
    assert corpus.get("raw", "bio-forget-corpus") == json.loads((bench / "forget.json").read_text())
    assert corpus.get("raw", "bio-retain-corpus") == json.loads((bench / "retain1.json").read_text())
