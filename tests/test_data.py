"""Tests for llm_unlearn.data: the MUSE loader, the embedded demo benchmark and the collator."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from llm_unlearn.data.collate import (
    ForgetRetainDataset,
    LMDataset,
    UnlearningCollator,
    chunk_texts,
    pad_batch,
)
from llm_unlearn.data.corpora import DEMO, SPLITS, DataError, load_muse
from llm_unlearn.data.demo import (
    BENCH_DIR,
    GROUPS,
    QUIZ_REPEATS,
    QUIZ_SIZE,
    generate_demo_benchmark,
    make_people,
    write_muse_folder,
)

# ---------------------------------------------------------------- loader


def _write(path: Path, records: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")


@pytest.fixture
def muse_dir(tmp_path: Path) -> Path:
    root = tmp_path / "muse"
    _write(root / "raw" / "forget.json", ["first passage", "second passage"])
    _write(root / "raw" / "retain1.json", [{"text": "a retained passage"}])
    _write(root / "privleak" / "holdout.json", [{"text": "held out", "id": 3}])
    _write(root / "verbmem" / "forget.json", [{"prompt": "Once upon", "gt": "a time"}])
    _write(root / "knowmem" / "forget_qa.json", [{"question": "Who?", "answer": "Varo", "extra": 1}])
    return root


def test_local_folder_reads_both_record_shapes(muse_dir: Path) -> None:
    needs = {
        "raw": ["forget", "retain1"],
        "privleak": ["holdout"],
        "verbmem": ["forget"],
        "knowmem": ["forget_qa"],
    }
    corpus = load_muse(str(muse_dir), needs)
    assert corpus.get("raw", "forget") == ["first passage", "second passage"]
    assert corpus.get("raw", "retain1") == ["a retained passage"]
    assert corpus.get("privleak", "holdout") == ["held out"]
    assert corpus.get("verbmem", "forget") == [{"prompt": "Once upon", "gt": "a time"}]
    assert corpus.get("knowmem", "forget_qa") == [{"question": "Who?", "answer": "Varo"}]
    with pytest.raises(DataError, match=r"'raw' split 'holdout' was not loaded; available: raw/forget"):
        corpus.get("raw", "holdout")


def test_a_single_split_name_is_one_split(muse_dir: Path) -> None:
    assert load_muse(str(muse_dir), {"raw": "forget"}).get("raw", "forget")[0] == "first passage"


KNOWMEM_NO_ANSWER = '[{"question": "a", "answer": "b"}, {"question": "c"}]'


@pytest.mark.parametrize(
    ("needs", "broken", "match"),
    [
        ({"news": ["x"]}, None, r"unknown config 'news'; expected one of raw, verbmem, knowmem, privleak"),
        (
            {"raw": ["holdout"]},
            None,
            r"'raw' split 'holdout': .*raw/holdout\.json not found; raw/ holds forget",
        ),
        ({"raw": ["forget"]}, ("raw/forget.json", '["unclosed"'), r"raw/forget\.json is not valid JSON"),
        (
            {"raw": ["forget"]},
            ("raw/forget.json", '{"text": "x"}'),
            r"raw/forget: expected a JSON list .* dict",
        ),
        ({"raw": ["forget"]}, ("raw/forget.json", "[]"), r"raw/forget: has no records"),
        ({"raw": ["forget"]}, ("raw/forget.json", '["ok", 7]'), r"record 1 is int; expected a string or an"),
        ({"raw": ["forget"]}, ("raw/forget.json", '["ok", {"txt": "x"}]'), r"record 1 has no field 'text'"),
        (
            {"knowmem": ["forget_qa"]},
            ("knowmem/forget_qa.json", KNOWMEM_NO_ANSWER),
            r"knowmem/forget_qa: record 1 has no field 'answer'; expected an object with fields question",
        ),
        (
            {"verbmem": ["forget"]},
            ("verbmem/forget.json", '[{"prompt": "a", "gt": null}]'),
            r"verbmem/forget: record 0 field 'gt' is NoneType; expected a string",
        ),
    ],
)
def test_local_folder_errors_name_the_problem(
    muse_dir: Path, needs: dict, broken: tuple[str, str] | None, match: str
) -> None:
    if broken:
        (muse_dir / broken[0]).write_text(broken[1], encoding="utf-8")
    with pytest.raises(DataError, match=match) as error:
        load_muse(str(muse_dir), needs)
    assert str(muse_dir) in str(error.value) and "\n" not in str(error.value)


def test_missing_config_folder(muse_dir: Path) -> None:
    shutil.rmtree(muse_dir / "verbmem")
    with pytest.raises(
        DataError, match=r"config folder .*muse/verbmem not found; expected .*verbmem/forget\.json"
    ):
        load_muse(str(muse_dir), {"raw": ["forget"], "verbmem": ["forget"]})


@pytest.mark.parametrize("source", ["./no/such/dir", "/no/such/dir", "~/no/such/dir", "a/b/c"])
def test_missing_folder(source: str) -> None:
    with pytest.raises(DataError, match=rf"^{re.escape(source)}: folder not found"):
        load_muse(source, {"raw": ["forget"]})


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "muse.json").write_text("[]")
    with pytest.raises(DataError, match=r"muse\.json: is a file; expected a folder"):
        load_muse(str(tmp_path / "muse.json"), {"raw": ["forget"]})


def test_hub_id_goes_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(path: str, name: str, split: str) -> object:
        calls.append((path, name, split))
        if name == "raw":
            return datasets.Dataset.from_list([{"text": "news one"}, {"text": "news two"}])
        return [{"question": "Q?", "answer": "A", "id": 0}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_muse("muse-bench/MUSE-News", {"raw": ["forget"], "knowmem": ["forget_qa"]})
    assert calls == [
        ("muse-bench/MUSE-News", "raw", "forget"),
        ("muse-bench/MUSE-News", "knowmem", "forget_qa"),
    ]
    assert corpus.get("raw", "forget") == ["news one", "news two"]
    assert corpus.get("knowmem", "forget_qa") == [{"question": "Q?", "answer": "A"}]


def test_hub_errors_become_one_line_data_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_load_dataset(path: str, name: str, split: str) -> object:
        raise ConnectionError("offline:\nno route to host")

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    with pytest.raises(
        DataError,
        match=r"^muse-bench/MUSE-Books: .*config 'verbmem' split 'forget' .*"
        r"ConnectionError: offline: no route to host$",
    ):
        load_muse("muse-bench/MUSE-Books", {"verbmem": ["forget"]})


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


# ---------------------------------------------------------------- demo benchmark


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


# ---------------------------------------------------------------- collate

_WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]


def _tokenizer(bos: bool) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<s>", "</s>", *_WORDS])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    if bos:
        tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.mark.parametrize("bos", [True, False])
def test_chunking_respects_max_length_and_keeps_all_tokens(bos: bool) -> None:
    tokenizer = _tokenizer(bos)
    texts = ["the cat sat on a mat and the dog ran", "dog ran", "the cat sat on the mat"]
    windows = chunk_texts(texts, tokenizer, max_length=4)
    assert all(2 <= len(w) <= 4 for w in windows)
    expected = [t for ids in tokenizer(texts)["input_ids"] for t in (*ids, tokenizer.eos_token_id)]
    assert [t for w in windows for t in w] == expected
    assert windows[0][0] == (tokenizer.bos_token_id if bos else tokenizer.convert_tokens_to_ids("the"))


def test_chunking_drops_windows_with_nothing_to_predict() -> None:
    tokenizer = _tokenizer(bos=False)
    eos = tokenizer.eos_token_id
    # "" is a lone EOS; "the cat sat" + EOS cut at 3 leaves EOS alone
    assert chunk_texts(["", "the cat sat", "dog ran"], tokenizer, 3) == [[4, 5, 6], [10, 11, eos]]


def test_pad_batch_masks_labels_exactly_on_padding() -> None:
    pad = 3  # the pad id doubles as EOS, as with many causal LMs: a real EOS must stay a label
    batch = pad_batch([[5, 6, 3], [7], [8, 9]], pad_id=pad, prefix="forget_")
    assert batch["forget_input_ids"].tolist() == [[5, 6, 3], [7, 3, 3], [8, 9, 3]]
    assert batch["forget_attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["forget_labels"].tolist() == [[5, 6, 3], [7, -100, -100], [8, 9, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_retain_pairing_is_seeded_cycles_and_covers_all() -> None:
    forget = [[i, i] for i in range(7)]
    retain = [[100 + j, 0] for j in range(3)]
    dataset = ForgetRetainDataset(forget, retain, seed=4)
    picks = [dataset[i]["retain_input_ids"][0] - 100 for i in range(len(dataset))]
    assert len(dataset) == 7 and [dataset[i]["forget_index"] for i in range(7)] == list(range(7))
    assert sorted(picks[:3]) == [0, 1, 2] and picks[3:6] == picks[:3] and picks[6] == picks[0]
    assert picks == [
        ForgetRetainDataset(forget, retain, seed=4)[i]["retain_input_ids"][0] - 100 for i in range(7)
    ]
    assert "retain_input_ids" not in ForgetRetainDataset(forget, None)[0]


def test_set_epoch_continues_the_retain_cycle() -> None:
    retain = [[j, j] for j in range(10)]
    dataset = ForgetRetainDataset([[1, 2]] * 4, retain, seed=0)
    seen = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        seen += [dataset[i]["retain_input_ids"][0] for i in range(4)]
    assert sorted(seen[:10]) == list(range(10)) and seen[10:] == seen[:2]


def test_collator_pairs_forget_and_retain_and_serves_plain_lm_items() -> None:
    collator = UnlearningCollator(pad_id=0)
    dataset = ForgetRetainDataset([[1, 2, 3], [4]], [[5, 6]], seed=0)
    batch = collator([dataset[1], dataset[0]])
    assert batch["forget_index"].tolist() == [1, 0]
    assert batch["forget_labels"].tolist() == [[4, -100, -100], [1, 2, 3]]
    assert batch["retain_input_ids"].tolist() == [[5, 6], [5, 6]]
    plain = collator([LMDataset([[1, 2], [3]])[i] for i in range(2)])
    assert sorted(plain) == ["attention_mask", "input_ids", "labels"]
    assert plain["labels"].tolist() == [[1, 2], [3, -100]]
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        collator([{"labels": [1]}])
    with pytest.raises(ValueError, match="pad_token"):
        UnlearningCollator(pad_id=None)
