"""Load a MUSE-layout benchmark from the embedded demo, a local folder or the Hugging Face Hub.

Records are normalised to one shape per config whatever the source wrote (a string or a
{"text": ...} object for raw/privleak), and every problem a user can fix is a DataError with a
one-line message naming the source, config, split or field, so a recipe fails at load time with
a pointer to the file rather than deep inside training.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.data.demo import BENCH_DIR
from llm_unlearn.errors import UserError

DEMO = "demo"
#: the quick demo's target as a model name (`llm-unlearn demo --quick`); its data and retrain model are DEMO's
DEMO_QUICK = "demo_quick"
#: the model names that are the demo's own checkpoints (built on first use), not paths or Hub ids
DEMO_MODELS = (DEMO, DEMO_QUICK)
SPLITS: dict[str, tuple[str, ...]] = {
    "raw": ("forget", "retain1", "retain2", "holdout"),
    "verbmem": ("forget",),
    "knowmem": ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"),
    "privleak": ("forget", "retain", "holdout"),
}
_TEXT = ("text",)
FIELDS: dict[str, tuple[str, ...]] = {
    "raw": _TEXT,
    "privleak": _TEXT,
    "verbmem": ("prompt", "gt"),
    "knowmem": ("question", "answer"),
}
# "name" or "owner/name": anything else that does not exist on disk can only be a mistyped path.
_HUB_ID = re.compile(r"\w[\w.-]*(/\w[\w.-]*)?")


class DataError(UserError):
    """A user-fixable data problem; the message is one line naming source, config, split or field
    and what was expected."""


@dataclass(frozen=True)
class MuseCorpus:
    """Normalised records: raw/privleak -> list[str]; verbmem -> [{prompt, gt}];
    knowmem -> [{question, answer}]."""

    source: str
    splits: dict[str, dict[str, list]]

    def get(self, config: str, split: str) -> list:
        try:
            return self.splits[config][split]
        except KeyError:
            loaded = ", ".join(f"{c}/{s}" for c, by_split in self.splits.items() for s in by_split)
            message = f"config {config!r} split {split!r} was not loaded; available: {loaded or 'none'}"
            raise DataError(f"{self.source}: {message}") from None


def load_muse(source: str, needs: Mapping[str, Iterable[str]]) -> MuseCorpus:
    """Load the requested configs/splits from `source`.

    `source` is "demo" (the embedded benchmark in llm_unlearn/data/demo_bench; the name wins over
    a folder called demo), an existing local folder laid out DIR/<config>/<split>.json, or a Hub
    dataset id such as muse-bench/MUSE-News, read with datasets.load_dataset(source, config,
    split=split); a missing path not shaped like a Hub id ("name" or "owner/name") is reported as
    a missing folder. `needs` maps config -> split names, e.g. {"knowmem": ["forget_qa"]}.
    Raises DataError for any missing or malformed piece.
    """
    wanted = {
        config: [splits] if isinstance(splits, str) else list(splits) for config, splits in needs.items()
    }
    for config in wanted:
        if config not in SPLITS:
            raise DataError(f"{source}: unknown config {config!r}; expected one of {', '.join(SPLITS)}")
    read = _reader(source)
    loaded: dict[str, dict[str, list]] = {}
    for config, splits in wanted.items():
        loaded[config] = {
            split: _normalise(read(config, split), f"{source}: {config}/{split}", FIELDS[config])
            for split in splits
        }
    return MuseCorpus(source, loaded)


def is_hub_id(text: str) -> bool:
    """Shaped like a Hub repository id: "name" or "owner/name"."""
    return _HUB_ID.fullmatch(text) is not None


def _reader(source: str) -> Callable[[str, str], Any]:
    if source == DEMO:
        return lambda config, split: _read_folder(source, BENCH_DIR, config, split)
    path = Path(source).expanduser()
    if path.is_dir():
        return lambda config, split: _read_folder(source, path, config, split)
    if path.exists():
        raise DataError(f"{source}: is a file; expected a folder laid out <config>/<split>.json")
    if not is_hub_id(source):
        raise DataError(f"{source}: folder not found (and not a Hub dataset id such as muse-bench/MUSE-News)")
    return lambda config, split: _read_hub(source, config, split)


def _read_folder(source: str, root: Path, config: str, split: str) -> Any:
    folder = root / config
    if not folder.is_dir():
        raise DataError(f"{source}: config folder {folder} not found; expected {folder}/{split}.json")
    file = folder / f"{split}.json"
    if not file.is_file():
        present = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))
        raise DataError(
            f"{source}: config {config!r} split {split!r}: {file} not found; "
            f"{config}/ holds {', '.join(present) or 'no .json files'}"
        )
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{source}: {file} is not valid JSON: {error}") from None


def _read_hub(source: str, config: str, split: str) -> Any:
    import datasets  # imported here: it is slow to import and only the Hub path needs it

    try:
        return list(datasets.load_dataset(source, config, split=split))
    # datasets signals a wrong id, config or split, or no network, with many exception types;
    # each is the user's to fix, so each becomes a DataError that names what was asked for.
    except Exception as error:
        detail = " ".join(str(error).split())[:300]
        raise DataError(
            f"{source}: not a local folder, and Hub dataset config {config!r} split {split!r} "
            f"could not be loaded: {type(error).__name__}: {detail}"
        ) from error


def _normalise(records: Any, where: str, fields: tuple[str, ...]) -> list:
    if not isinstance(records, list):
        raise DataError(f"{where}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise DataError(f"{where}: has no records")
    return [_record(record, index, where, fields) for index, record in enumerate(records)]


#: fields whose empty value leaves a metric or the training nothing to work on
NON_EMPTY = ("text", "prompt", "question")


def _record(record: Any, index: int, where: str, fields: tuple[str, ...]) -> str | dict[str, str]:
    if fields == _TEXT and isinstance(record, str):
        if not record.strip():
            raise DataError(f"{where}: record {index} is an empty text; remove it or give it text")
        return record
    expected = ("a string or " if fields == _TEXT else "") + f"an object with fields {', '.join(fields)}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: record {index} is {type(record).__name__}; expected {expected}")
    for field in fields:
        if field not in record:
            raise DataError(f"{where}: record {index} has no field {field!r}; expected {expected}")
        if not isinstance(record[field], str):
            actual = type(record[field]).__name__
            raise DataError(f"{where}: record {index} field {field!r} is {actual}; expected a string")
        if field in NON_EMPTY and not record[field].strip():
            raise DataError(f"{where}: record {index} field {field!r} is empty; remove the record or fill it")
    return record["text"] if fields == _TEXT else {field: record[field] for field in fields}
