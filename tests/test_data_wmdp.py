"""The WMDP loader: local folders in the Hub's layout, RMU's corpora, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_unlearn.data.benchmark import detect_benchmark, load_benchmark, training_texts
from llm_unlearn.data.corpora import DataError
from llm_unlearn.data.wmdp import check_corpus_split, is_wmdp_source, load_wmdp

QUESTION = {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 2}


def _folder(root: Path, records: object = None, config: str = "wmdp-bio") -> Path:
    (root / config).mkdir(parents=True)
    (root / config / "test.json").write_text(json.dumps([QUESTION] if records is None else records))
    return root


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_a_local_folder_loads_questions_and_corpora_as_muse_splits(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    _jsonl(root / "bio-forget-corpus.jsonl", ["forget one", "forget two"])
    _jsonl(root / "cyber-forget-corpus.jsonl", ["cyber"])
    outside = _jsonl(tmp_path / "mine.jsonl", ["mine"])
    # RMU keeps wikitext's non-empty lines
    _jsonl(root / "wikitext.jsonl", ["", "short", ""])
    corpus = load_wmdp(
        str(root),
        {"wmdp-bio": ["test"], "raw": ["bio-forget-corpus, cyber-forget-corpus", f"wikitext,{outside}"]},
    )
    assert corpus.get("wmdp-bio", "test") == [QUESTION]
    assert corpus.get("raw", "bio-forget-corpus, cyber-forget-corpus") == [
        "forget one",
        "forget two",
        "cyber",
    ]
    assert corpus.get("raw", f"wikitext,{outside}") == ["short", "mine"]


def test_the_benchmark_is_detected_and_trains_on_its_corpora(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    _jsonl(root / "cyber-forget-corpus.jsonl", ["c"])
    assert is_wmdp_source(str(root)) and is_wmdp_source("cais/wmdp") and is_wmdp_source("demo_wmdp")
    assert not is_wmdp_source("muse-bench/MUSE-News")
    assert detect_benchmark(str(root)) == "wmdp" and detect_benchmark("cais/wmdp") == "wmdp"

    class Data:
        forget_split = "cyber-forget-corpus"
        retain_split = "cyber-forget-corpus"

    corpus = load_benchmark(str(root), {"raw": {"cyber-forget-corpus"}})
    assert training_texts(Data(), corpus, "forget") == ["c"]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"question": "Q?", "choices": ["a", "b", "c", "d"]}], "record 0 has no field 'answer'"),
        ([{**QUESTION, "choices": ["a", "b"]}], "record 0 field 'choices' must be a list of 4 strings"),
        ([{**QUESTION, "answer": 4}], "record 0 field 'answer' must be the index 0-3"),
        ([{**QUESTION, "answer": "C"}], "record 0 field 'answer' must be the index 0-3"),
        ([{**QUESTION, "question": " "}], "record 0 field 'question' must be a non-empty string"),
        ([], "expected a non-empty JSON list"),
    ],
)
def test_a_malformed_question_is_one_line(tmp_path: Path, records: object, message: str) -> None:
    root = _folder(tmp_path, records)
    with pytest.raises(DataError, match=message) as caught:
        load_wmdp(str(root), {"wmdp-bio": ["test"]})
    assert "\n" not in str(caught.value) and "wmdp-bio/test" in str(caught.value)


def test_missing_pieces_are_named(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    with pytest.raises(DataError, match=r"wmdp-cyber test: .*wmdp-cyber/test.json not found"):
        load_wmdp(str(root), {"wmdp-cyber": ["test"]})
    with pytest.raises(DataError, match="record 0 has no field 'subject'"):
        load_wmdp(str(_folder(tmp_path / "m", config="mmlu")), {"mmlu": ["test"]})
    with pytest.raises(DataError, match="has only the split 'test', not 'train'"):
        load_wmdp(str(root), {"wmdp-bio": ["train"]})
    with pytest.raises(DataError, match="unknown WMDP config 'knowmem'"):
        load_wmdp(str(root), {"knowmem": ["forget_qa"]})
    with pytest.raises(DataError, match=r"corpus file .*bio-forget-corpus.jsonl not found"):
        load_wmdp(str(root), {"raw": ["bio-forget-corpus"]})
    with pytest.raises(DataError, match="folder not found"):
        load_wmdp(str(tmp_path / "no" / "such"), {"wmdp-bio": ["test"]})


def test_the_gated_bio_forget_corpus_is_named_before_any_hub_call() -> None:
    with pytest.raises(DataError, match=r"bio-forget-corpus is gated, not on the Hub: request it"):
        load_wmdp("cais/wmdp", {"raw": ["bio-forget-corpus"]})


def test_a_split_names_known_corpora_or_jsonl_files() -> None:
    check_corpus_split("bio-forget-corpus,cyber-forget-corpus")
    check_corpus_split("~/wmdp/bio-forget-corpus.jsonl, wikitext")
    with pytest.raises(ValueError, match="'forget' is not a WMDP corpus; use bio-forget-corpus"):
        check_corpus_split("forget")
