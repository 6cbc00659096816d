"""`llm_unlearn/locations.py`: a checkpoint's path or Hub id, and a repo id to push to, checked
without loading anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_unlearn.errors import UserError
from llm_unlearn.locations import check_checkpoint, check_repo_id, check_source, split_revision


def test_split_revision() -> None:
    assert split_revision("org/model@v1") == ("org/model", "v1")
    assert split_revision("org/model") == ("org/model", None)
    assert split_revision("/a/folder@v1") == ("/a/folder@v1", None)  # a path, not a Hub id
    assert split_revision("org/model@") == ("org/model@", None)


def test_what_is_there_or_on_the_hub_passes(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"")
    for spec in (tmp_path, tmp_path / "m.gguf", "org/model", "org/model@v1", "org/model/q4.gguf"):
        check_checkpoint(spec, "--model")
    check_source(tmp_path, "TARGET")
    check_source("org/model", "TARGET")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{tmp}/none", "--model: folder '{tmp}/none' not found (and not a Hub id such as org/name[@rev"),
        ("{tmp}/file.txt", "--model: '{tmp}/file.txt' is a file; give a checkpoint folder, a Hub id"),
        ("{tmp}/none.gguf", "--model: GGUF file '{tmp}/none.gguf' not found (nor a Hub file"),
        ("{tmp}/none@v1", "--model: folder '{tmp}/none@v1' not found"),
    ],
)
def test_what_is_neither_is_refused_naming_the_field(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "file.txt").write_text("")
    with pytest.raises(UserError) as refused:
        check_checkpoint(spec.format(tmp=tmp_path), "--model")
    assert str(refused.value).startswith(message.format(tmp=tmp_path))


def test_check_source_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^UNLEARNED: folder '.*/none' not found \(and not a Hub id"):
        check_source(tmp_path / "none", "UNLEARNED")


@pytest.mark.parametrize("repo_id", ["org/name", "my-org/npo_news.v2"])
def test_a_repo_id_the_hub_takes_passes(repo_id: str) -> None:
    check_repo_id(repo_id)


@pytest.mark.parametrize("repo_id", ["name", "a/b/c", "org/na me", "org/-name", "org/name--x"])
def test_a_repo_id_the_hub_refuses_is_refused_naming_the_flag(repo_id: str) -> None:
    with pytest.raises(UserError, match=f"^--repo-id '{repo_id}': give ORG/NAME"):
        check_repo_id(repo_id)
