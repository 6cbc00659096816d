"""`results.jsonl`: one JSON line per model × target × quantizer × metric cell.

Each line is appended to the file (one `write`, more only where the disk is nearly full) and
fsync'd, so a killed run, or a full disk (one line, `errors.writing`), leaves at most one torn last
line, which reading cuts off; that cell is then recomputed.
Under a launch with several processes, `ResultsFile.shared` opens the file on each of them and
only the main process writes it. Lines an older version wrote are read with today's target labels
(`runfolder.relabel`, by the recipe.yaml beside the file); the file itself is left as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from accelerate import PartialState

from llm_unlearn.errors import UserError, writing
from llm_unlearn.runfolder import RunFolder, relabel, write_atomic

Key = tuple[str, str, str, str]


def cell_key(record: dict[str, Any]) -> Key:
    return (record["model"], record["target"], record["quantizer"], record["metric"])


class ResultsFile:
    def __init__(self, path: Path, write: bool = True) -> None:
        """`write=False` keeps added records in memory only (a process other than the main one)."""
        self.path = path
        self.write = write
        self._records: dict[Key, dict[str, Any]] = {}
        if path.exists():
            label = RunFolder(path.parent).target_label
            text = path.read_text()
            if text and not text.endswith("\n"):
                # A torn last line from a killed run: cut it, or the next append would join it.
                text = text[: text.rfind("\n") + 1]
                if write:
                    write_atomic(path, text)
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    record = json.loads(line)
                    record["target"] = relabel(record["target"], label)
                    self._records[cell_key(record)] = record
                # a file edited by hand or by another tool: say which line, not where json failed
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(
                        f"{path}: line {number} is not a results record (JSON with model, target, "
                        "quantizer, metric); fix or remove that line"
                    ) from None

    @classmethod
    def shared(cls, path: Path) -> ResultsFile:
        """`path` opened by every process of a launch (call it on all): the main process first,
        as it may cut a torn line, then the others, so all read the same cells; only main writes."""
        state = PartialState()
        with state.main_process_first():
            return cls(path, write=state.is_main_process)

    def get(self, model: str, target: str, quantizer: str, metric: str) -> dict[str, Any] | None:
        return self._records.get((model, target, quantizer, metric))

    def add(self, record: dict[str, Any]) -> None:
        if self.write:
            line = memoryview((json.dumps(record, sort_keys=True, default=str) + "\n").encode())
            with writing(self.path):
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    # a nearly full disk takes part of a line: write the rest, or fail on the next
                    # write (the torn line is then cut when the file is read again)
                    while line:
                        line = line[os.write(fd, line) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._records[cell_key(record)] = record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)
