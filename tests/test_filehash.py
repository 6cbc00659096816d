"""filehash.py: every byte hashed by `sha256_file`; `HashMemo` reads an unchanged file once, and reads
again a file whose size, times or inode changed, or one written too recently to trust its stat."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from llm_unlearn import filehash
from llm_unlearn.filehash import HashMemo, sha256_file, sha256_files


def test_sha256_file_hashes_every_byte(tmp_path) -> None:
    data = os.urandom(3 * (1 << 20) + 7)  # more than one read block, and a ragged end
    (tmp_path / "w").write_bytes(data)
    assert sha256_file(tmp_path / "w") == hashlib.sha256(data).hexdigest()


def test_an_unchanged_file_is_read_once(tmp_path, reads) -> None:
    path = tmp_path / "w"
    path.write_bytes(b"weights")
    memo = HashMemo(tmp_path / "hashes.json")
    assert memo.digests([path]) == {path: hashlib.sha256(b"weights").hexdigest()}
    assert reads == [path]
    # a new memo on the same file: a later process, which reads only what is on disk
    assert HashMemo(tmp_path / "hashes.json").digests([path]) == {
        path: hashlib.sha256(b"weights").hexdigest()
    }
    assert reads == [path]
    entry = json.loads((tmp_path / "hashes.json").read_text())[str(path.resolve())]
    stat = path.stat()
    assert entry == [
        stat.st_size,
        stat.st_ino,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
        hashlib.sha256(b"weights").hexdigest(),
    ]


def test_a_file_of_another_size_or_time_is_read_again(tmp_path, reads) -> None:
    path, memo = tmp_path / "w", HashMemo(tmp_path / "hashes.json")
    path.write_bytes(b"weights")
    memo.digests([path])
    path.write_bytes(b"weight")  # truncated
    assert memo.digests([path]) == {path: hashlib.sha256(b"weight").hexdigest()}
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # only its time moved
    memo.digests([path])
    assert reads == [path] * 3


def test_a_byte_changed_with_size_and_mtime_kept_is_read_again(tmp_path, reads) -> None:
    """`os.utime` sets the modification time back, not the status-change time, which the memo keys."""
    path, memo = tmp_path / "w", HashMemo(tmp_path / "hashes.json")
    path.write_bytes(b"weights")
    before = path.stat()
    memo.digests([path])
    time.sleep(0.05)  # past a coarse filesystem clock's tick
    path.write_bytes(b"weighty")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert memo.digests([path]) == {path: hashlib.sha256(b"weighty").hexdigest()}
    assert reads == [path, path]


def test_a_file_written_just_now_is_not_memoised(tmp_path, monkeypatch) -> None:
    path, memo = tmp_path / "w", HashMemo(tmp_path / "hashes.json")
    path.write_bytes(b"weights")
    monkeypatch.setattr(filehash, "RACY_NS", 60 * 10**9)
    memo.digests([path])
    assert not (tmp_path / "hashes.json").exists()  # its stat could hide a rewrite in the same tick


def test_no_memo_reads_every_file_every_time(tmp_path, reads) -> None:
    path = tmp_path / "w"
    path.write_bytes(b"weights")
    sha256_files([path])
    sha256_files([path])
    assert reads == [path, path]


@pytest.mark.parametrize("memo_text", [None, "not json {", "[1, 2]"])
def test_a_missing_or_torn_memo_file_is_started_afresh(tmp_path, reads, memo_text) -> None:
    path, memo_path = tmp_path / "w", tmp_path / "hashes.json"
    path.write_bytes(b"weights")
    if memo_text is not None:
        memo_path.write_text(memo_text)
    assert HashMemo(memo_path).digests([path]) == {path: hashlib.sha256(b"weights").hexdigest()}
    assert set(json.loads(memo_path.read_text())) == {str(path.resolve())}


def test_entries_of_files_gone_are_dropped(tmp_path, reads) -> None:
    gone, kept, memo = tmp_path / "gone", tmp_path / "kept", HashMemo(tmp_path / "hashes.json")
    gone.write_bytes(b"a")
    memo.digests([gone])
    gone.unlink()
    kept.write_bytes(b"b")
    memo.digests([kept])
    assert set(json.loads((tmp_path / "hashes.json").read_text())) == {str(kept.resolve())}
