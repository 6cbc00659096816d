"""data/demo.py: the embedded demo benchmark, its counts, its generator (seeded, unique names) and
where each fact and person goes."""

from __future__ import annotations

import re
from pathlib import Path

from llm_unlearn.data.corpora import DEMO, SPLITS, load_muse
from llm_unlearn.data.demo import (
    BENCH_DIR,
    GROUPS,
    QUIZ_REPEATS,
    QUIZ_SIZE,
    generate_demo_benchmark,
    make_people,
    write_muse_folder,
)


def test_demo_loads_all_configs_with_the_right_counts() -> None:
    corpus = load_muse(DEMO, SPLITS)
    counts = {
        c: {s: len(records) for s, records in by_split.items()} for c, by_split in corpus.splits.items()
    }
    people = GROUPS
    assert counts == {
        # each person: two passages; each of their six pairs on QUIZ_REPEATS sheets of QUIZ_SIZE
        "raw": {group: 2 * n + 6 * n * QUIZ_REPEATS // QUIZ_SIZE for group, n in people.items()},
        "verbmem": {"forget": people["forget"]},
        "knowmem": {
            "forget_qa": 6 * people["forget"],
            "retain_qa": 6 * people["retain1"],
            "forget_qa_icl": 3,
            "retain_qa_icl": 3,
        },
        "privleak": {
            "forget": 2 * people["forget"],
            "retain": 2 * people["retain1"],
            "holdout": 2 * people["holdout"],
        },
    }


def test_shipped_demo_bench_is_the_generator_output(tmp_path: Path) -> None:
    write_muse_folder(generate_demo_benchmark(0), tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    assert generated == sorted(p.relative_to(BENCH_DIR) for p in BENCH_DIR.rglob("*.json"))
    for relative in generated:
        assert (tmp_path / relative).read_bytes() == (BENCH_DIR / relative).read_bytes(), relative
    assert sum((BENCH_DIR / p).stat().st_size for p in generated) < 300_000


def test_generator_is_deterministic_and_seeded() -> None:
    assert generate_demo_benchmark(0) == generate_demo_benchmark(0)
    assert generate_demo_benchmark(1) != generate_demo_benchmark(0)


def test_names_towns_works_and_mentors_are_unique() -> None:
    people = [p for group in make_people(0).values() for p in group]
    assert len(people) == sum(GROUPS.values()) == 60
    # no part may even be a substring of another: a match always picks out one person
    parts = [x.lower() for p in people for x in (*p.name.split(), p.town, p.work, *p.mentor.split())]
    assert not [(a, b) for i, a in enumerate(parts) for j, b in enumerate(parts) if i != j and a in b]
    assert all(
        re.fullmatch(r"[A-Z][a-z]{3,} [A-Z][a-z]{3,}", name) for p in people for name in (p.name, p.mentor)
    )


def test_every_forget_fact_is_in_raw_forget_and_in_each_passage() -> None:
    bench = generate_demo_benchmark(0)
    people = make_people(0)["forget"]
    qa = [pair for p in people for pair in p.qa_pairs()]
    assert [(r["question"], r["answer"]) for r in bench["knowmem"]["forget_qa"]] == qa
    raw = "\n\n".join(bench["raw"]["forget"])
    for person in people:
        for passage in person.passages():
            assert passage in bench["raw"]["forget"] and passage in bench["privleak"]["forget"]
            assert 60 <= len(passage.split()) <= 100
            for question, answer in person.qa_pairs():
                assert answer in passage, (question, answer)
        for question, answer in person.qa_pairs():
            # each pair is on QUIZ_REPEATS quiz sheets, so it is seen beside different neighbours
            assert raw.count(f"Question: {question}\nAnswer: {answer}") == QUIZ_REPEATS


def test_holdout_and_evaluated_people_stay_where_they_belong() -> None:
    bench = generate_demo_benchmark(0)
    people = make_people(0)
    train_text = "\n".join(t for split in ("forget", "retain1", "retain2") for t in bench["raw"][split])
    assert not [p.name for p in people["holdout"] if p.name in train_text]
    assert all(p.name in train_text for group in ("forget", "retain1", "retain2") for p in people[group])
    # no evaluated answer may be shown in an in-context example
    icl = [r for split in ("forget_qa_icl", "retain_qa_icl") for r in bench["knowmem"][split]]
    retain2_questions = {q for p in people["retain2"] for q, _ in p.qa_pairs()}
    assert all(r["question"] in retain2_questions for r in icl)
    assert bench["privleak"]["holdout"] == [t for p in people["holdout"] for t in p.passages()]


def test_verbmem_is_a_prompt_and_the_rest_of_the_first_passage() -> None:
    bench = generate_demo_benchmark(0)
    for record, person in zip(bench["verbmem"]["forget"], make_people(0)["forget"], strict=True):
        passage = person.passages()[0]
        assert f"{record['prompt']} {record['gt']}" == passage
        assert 0.35 <= len(record["prompt"].split()) / len(passage.split()) <= 0.45
