"""Books -> MUSE layout: chapters, sentences, next-name questions, and a folder `load_muse` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_unlearn.data.books import (
    BenchmarkSpec,
    Book,
    build_benchmark,
    next_name_questions,
    passages,
    sentences,
)
from llm_unlearn.data.corpora import SPLITS, load_muse

LINES = [
    "A NOVEL", "", "Chapter 1", "",
    "Mr. Bennet replied that he had not. \"But it is,\" returned she.",
    "Elizabeth laughed at the idea of dancing with Darcy at the ball.", "",
    "Jane smiled at her sister across the long and crowded room that night.",
    "CHAPTER II", "", "Darcy walked to the window and looked out over the wide park below.",
    "Elizabeth said that Elizabeth would never agree to such a plan at all.",
]  # fmt: skip


def test_chapters_and_paragraphs():
    book = Book.from_lines("A Novel", LINES, ("Elizabeth", "Darcy", "Jane"))
    assert len(book.chapters) == 2  # front matter before the first heading is dropped
    assert book.chapters[0].split("\n")[1].startswith("Jane smiled")  # paragraphs: one line each
    with pytest.raises(ValueError, match="no 'Chapter N' headings"):
        Book.from_lines("Notes", ["just text"], ())


def test_sentences_keep_titles_and_closing_quotes():
    assert sentences('I dare say Mr. Bingley will. She said "No." He went! "Yes?" _You_ want.') == [
        "I dare say Mr. Bingley will.",
        'She said "No."',
        "He went!",
        '"Yes?"',
        "_You_ want.",
    ]
    assert passages("One two three. Four five. Six seven eight nine.", 3) == [
        "One two three.",
        "Four five. Six seven eight nine.",
    ]


def test_next_name_questions_quote_the_words_before_one_named_character():
    book = Book.from_lines("A Novel", LINES, ("Elizabeth", "Darcy", "Jane"))
    questions = next_name_questions(book, book.chapters, limit=10, seed=0, context_words=8)
    # Two names in one sentence, or one name twice, is ambiguous: those sentences are skipped; so is
    # a name with fewer than 6 words before it in its passage (Darcy opening chapter 2).
    assert sorted((q["answer"], q["question"]) for q in questions) == [
        ("Jane", 'In A Novel, whose name comes next: "idea of dancing with Darcy at the ball. ____"'),
    ]


def test_benchmark_folder_loads_as_muse(tmp_path: Path):
    sentence = "{} walked slowly to the window and looked out over the wide park below them. "
    forget = Book(
        "Forget", tuple(sentence.format(n) * 12 for n in ("Ann", "Ben", "Ann", "Ben")), ("Ann", "Ben")
    )
    retain = Book("Retain", tuple(sentence.format("Cy") * 12 for _ in range(3)), ("Cy",))
    spec = BenchmarkSpec(
        forget_chapters=(0,),
        holdout_chapters=(2, 3),
        icl_chapters=(1,),
        retain_chapters=(0,),
        retain2_chapters=(1,),
        passage_words=90,
        knowmem=5,
        privleak=4,
    )
    sizes = build_benchmark(forget, [retain], spec, tmp_path)
    corpus = load_muse(str(tmp_path), SPLITS)
    assert sizes == {f"{c}/{s}": len(corpus.get(c, s)) for c, splits in SPLITS.items() for s in splits}
    assert {q["answer"] for q in corpus.get("knowmem", "forget_qa")} == {"Ann"}
    assert {q["answer"] for q in corpus.get("knowmem", "retain_qa")} == {"Cy"}
    assert len(corpus.get("privleak", "holdout")) == 4
    record = corpus.get("verbmem", "forget")[0]
    assert len(record["prompt"].split()) == 30 and len(record["gt"].split()) == 50
    again = tmp_path / "again"
    build_benchmark(forget, [retain], spec, again)
    for file in tmp_path.glob("*/*.json"):
        assert json.loads(file.read_text()) == json.loads((again / file.relative_to(tmp_path)).read_text())
