"""data/corpora.py: the MUSE loader, local folders (both record shapes) and Hub ids, and its errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import datasets
import pytest

from llm_unlearn.data.corpora import DataError, load_muse


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
