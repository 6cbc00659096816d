"""The sha256 of files, the package's one way to hash one, and a memo so an unchanged file is read once.

A 7B checkpoint is GBs, and a GGUF cell holds a whole model: `report` hashing every audited file
for certificate.json, and every lookup of a cached cell checking its stored hashes (audit/cache.py),
would each read them all again. `HashMemo` keeps each file's sha256 in a JSON file (a run folder's
`RunFolder.hashes`) under its absolute path with its size, inode, modification and status-change
times (`st_mtime_ns`, `st_ctime_ns`); a file whose stat differs in any of them is read again.

What the memo trusts, and who may use it: a file changed in place with its size kept and its
modification time set back (`os.utime`, `touch -d`) still gets a new status-change time, which no
unprivileged process can set, so it is read again; bytes changed under the filesystem (a bit rotted
on disk, a raw write by root) keep every stat and are not. Paths that re-check the run's own files
use it: a cell lookup in the same run folder (a truncated or rewritten cell is still caught) and
`report` re-writing the certificate. `llm-unlearn verify`, whose answer is the product's promise
about a file about to ship, never does: it reads every byte (`sha256_file`).

A file whose stat times are within `RACY_NS` of now is hashed but not memoised (git's "racy clean"
problem): written again within the same tick of a coarse filesystem clock, it could keep every stat.
Old run folders have no memo file: the first report or lookup reads their files and writes one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from llm_unlearn.runfolder import write_json

#: a file changed this recently (ns) may still change without its stat showing it: not memoised
RACY_NS = 2_000_000_000


def sha256_file(path: Path) -> str:
    """The sha256 of every byte of the file at `path` (`hashlib.file_digest` reads it in blocks)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]


class HashMemo:
    """The sha256 of files memoised in the JSON file `path`: {absolute path: [size, inode,
    mtime_ns, ctime_ns, sha256]}. Processes of one launch may write it at once: each write is
    atomic and merges what is on disk, so a race loses entries (read again later), never the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, list]:
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet (an old run folder), or torn by hand: start afresh
            return {}
        return found if isinstance(found, dict) else {}

    def digests(self, files: Iterable[Path]) -> dict[Path, str]:
        """{file: sha256} of `files`, read only where the memo has no entry with the file's stat."""
        memo, found, new = self._read(), {}, {}
        for path in files:
            key, stat = str(path.resolve()), path.stat()
            entry = memo.get(key)
            if isinstance(entry, list) and entry[:-1] == _stamp(stat):
                found[path] = entry[-1]
                continue
            found[path] = sha256_file(path)
            if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > RACY_NS:
                new[key] = [*_stamp(stat), found[path]]
        if new:
            # entries of files gone since (a cell rebuilt under a new name, a checkpoint deleted) dropped
            kept = {k: v for k, v in self._read().items() if Path(k).exists()}
            write_json(self.path, kept | new)
        return found


def sha256_files(files: Iterable[Path], memo: HashMemo | None = None) -> dict[Path, str]:
    """{file: sha256} of `files`: through `memo` where one is given, else every byte of each read."""
    if memo is not None:
        return memo.digests(files)
    return {path: sha256_file(path) for path in files}
