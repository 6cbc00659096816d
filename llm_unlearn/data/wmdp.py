"""WMDP (Li et al. 2024, arXiv 2403.03218): multiple-choice questions to forget, MMLU's to keep, and
the forget/retain corpora RMU trains on, from the Hugging Face Hub or a local folder.

| config | Hub (split) | local folder | record |
|---|---|---|---|
| wmdp-bio, -cyber, -chem | `cais/wmdp` (test) | DIR/<config>/test.json | question, choices (4), answer 0-3 |
| mmlu | `cais/mmlu` config all (test) | DIR/mmlu/test.json | + subject |
| raw/<corpus> | `cais/wmdp-corpora` <corpus> (train) | DIR/<corpus>.jsonl | text |
| raw/wikitext | `wikitext` wikitext-2-raw-v1 (test) | DIR/wikitext.jsonl | text |

The corpora are RMU's (`centerforaisafety/wmdp`, `rmu/utils.py::get_data`): cyber-forget-corpus,
bio-retain-corpus and cyber-retain-corpus are on the Hub; bio-forget-corpus is gated (request it with
the form linked from the `cais/wmdp-corpora` card; it comes as bio-forget-corpus.jsonl), so it is read
from a folder, or from a .jsonl path given in its place; wikitext keeps its non-empty lines, as RMU's
retain set does (`get_data` keeps len(text) > min_len, and `unlearn.py` passes --min_len 0). A data
split names one corpus or several joined by commas (RMU trains on bio and cyber together), each a
name above or a path to a JSON-lines file of {"text": ...} records.

The corpus is a `MuseCorpus`: questions under their config's "test" split, training texts under
"raw", so the training and relearning code reads WMDP as it reads MUSE. Every problem a user can fix
is a one-line DataError naming the source, config, split or field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llm_unlearn.data.corpora import DataError, MuseCorpus, is_hub_id

HUB_ID = "cais/wmdp"
MMLU_HUB = ("cais/mmlu", "all")
CORPORA_HUB = "cais/wmdp-corpora"
WIKITEXT_HUB = ("wikitext", "wikitext-2-raw-v1")
DEMO_WMDP = "demo_wmdp"
DEMO_WMDP_DIR = Path(__file__).parent / "demo_wmdp"
WMDP_CONFIGS = ("wmdp-bio", "wmdp-cyber", "wmdp-chem")
QUESTION_CONFIGS = (*WMDP_CONFIGS, "mmlu")
SPLIT = "test"
RAW = "raw"
CORPORA = ("bio-forget-corpus", "cyber-forget-corpus", "bio-retain-corpus", "cyber-retain-corpus", "wikitext")
GATED = "bio-forget-corpus"
N_CHOICES = 4
_FIELDS = {config: ("question", "choices", "answer") for config in QUESTION_CONFIGS}
_FIELDS["mmlu"] = ("question", "choices", "answer", "subject")


def is_wmdp_source(source: str) -> bool:
    """Whether `source` holds WMDP: the embedded demo, a folder with a wmdp-* config folder, or the
    Hub's cais/wmdp."""
    if source == DEMO_WMDP:
        return True
    path = Path(source).expanduser()
    if path.is_dir():
        return any((path / config).is_dir() for config in WMDP_CONFIGS)
    return not path.exists() and source.lower() == HUB_ID


def corpus_parts(split: str) -> list[str]:
    """The corpora a data split names: one name or .jsonl path, or several joined by commas."""
    return [part.strip() for part in split.split(",")]


def check_corpus_split(split: str) -> None:
    """A data split that names no known corpus and no .jsonl file is the user's to fix (ValueError:
    the recipe turns it into its one-line error)."""
    for part in corpus_parts(split):
        if part not in CORPORA and not part.endswith(".jsonl"):
            raise ValueError(
                f"{part!r} is not a WMDP corpus; use {', '.join(CORPORA)} (comma-separated for several) "
                "or a path to a .jsonl file of {'text': ...} records"
            )


def load_wmdp(source: str, needs: Mapping[str, Iterable[str]]) -> MuseCorpus:
    """The configs `needs` names: question configs (split "test") and "raw" corpora (its splits).

    `source` is "demo_wmdp" (the embedded demo folder), a local folder laid out as in the table
    above, or the Hub (cais/wmdp, with cais/mmlu, cais/wmdp-corpora and wikitext beside it).
    """
    folder = _folder(source)
    loaded: dict[str, dict[str, list]] = {}
    for config, splits in needs.items():
        if config == RAW:
            loaded[RAW] = {split: _texts(source, folder, split) for split in splits}
        elif config in _FIELDS:
            for split in splits:
                if split != SPLIT:
                    raise DataError(
                        f"{source}: WMDP config {config!r} has only the split {SPLIT!r}, not {split!r}"
                    )
            loaded[config] = {SPLIT: _questions(source, folder, config)}
        else:
            raise DataError(
                f"{source}: unknown WMDP config {config!r}; expected {', '.join((*_FIELDS, RAW))}"
            )
    return MuseCorpus(source, loaded)


def _folder(source: str) -> Path | None:
    """The local folder `source` names, None for the Hub."""
    if source == DEMO_WMDP:
        return DEMO_WMDP_DIR
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataError(f"{source}: is a file; expected a folder holding wmdp-bio/test.json, ...")
    if not is_hub_id(source):
        raise DataError(f"{source}: folder not found (and not a Hub dataset id such as {HUB_ID})")
    return None


def _questions(source: str, folder: Path | None, config: str) -> list[dict[str, Any]]:
    where = f"{source}: {config}/{SPLIT}"
    if folder is None:
        hub, name = MMLU_HUB if config == "mmlu" else (source, config)
        records = _hub(source, hub, name, SPLIT)
    else:
        records = _read_json(source, folder / config / f"{SPLIT}.json", f"{config} {SPLIT}")
    if not isinstance(records, list) or not records:
        raise DataError(f"{where}: expected a non-empty JSON list of question records")
    return [_question(record, i, where, _FIELDS[config]) for i, record in enumerate(records)]


def _question(record: Any, index: int, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: record {index} is {type(record).__name__}; expected an object")
    for name in fields:
        if name not in record:
            raise DataError(f"{where}: record {index} has no field {name!r}; expected {', '.join(fields)}")
    choices, answer = record["choices"], record["answer"]
    if (
        not isinstance(choices, list)
        or len(choices) != N_CHOICES
        or not all(isinstance(c, str) for c in choices)
    ):
        raise DataError(f"{where}: record {index} field 'choices' must be a list of {N_CHOICES} strings")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < N_CHOICES:
        raise DataError(
            f"{where}: record {index} field 'answer' must be the index 0-{N_CHOICES - 1} of the right choice"
        )
    if not isinstance(record["question"], str) or not record["question"].strip():
        raise DataError(f"{where}: record {index} field 'question' must be a non-empty string")
    return {name: record[name] for name in fields}


def _texts(source: str, folder: Path | None, split: str) -> list[str]:
    texts = [text for part in corpus_parts(split) for text in _corpus(source, folder, part)]
    if not texts:
        raise DataError(f"{source}: raw split {split!r} has no texts")
    return texts


def _corpus(source: str, folder: Path | None, part: str) -> list[str]:
    if part.endswith(".jsonl"):
        records = _read_jsonl(source, Path(part).expanduser())
    elif folder is not None:
        records = _read_jsonl(source, folder / f"{part}.jsonl")
    elif part == GATED:
        raise DataError(
            f"{source}: {GATED} is gated, not on the Hub: request it (form linked from the "
            f"{CORPORA_HUB} dataset card) and name its file in the split, e.g. ~/wmdp/{GATED}.jsonl"
        )
    elif part == "wikitext":
        records = _hub(source, *WIKITEXT_HUB, SPLIT)
    else:
        records = _hub(source, CORPORA_HUB, part, "train")
    texts = []
    for i, record in enumerate(records):
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{source}: corpus {part!r} record {i} has no string field 'text'")
        if text:
            texts.append(text)
    return texts


def _read_json(source: str, file: Path, what: str) -> Any:
    if not file.is_file():
        raise DataError(f"{source}: {what}: {file} not found")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{source}: {file} is not valid JSON: {error}") from None


def _read_jsonl(source: str, file: Path) -> list[Any]:
    if not file.is_file():
        raise DataError(f"{source}: corpus file {file} not found (JSON lines of {{'text': ...}})")
    lines = file.read_text(encoding="utf-8").splitlines()
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as error:
        raise DataError(f"{source}: {file} is not valid JSON lines: {error}") from None


def _hub(source: str, dataset: str, config: str, split: str) -> list[Any]:
    import datasets  # imported here: it is slow to import and only the Hub needs it

    try:
        return list(datasets.load_dataset(dataset, config, split=split))
    # datasets signals a wrong id, config or split, a gated repository or no network with many
    # exception types; each is the user's to fix, so each becomes one line naming what was asked for
    except Exception as error:
        detail = " ".join(str(error).split())[:300]
        raise DataError(
            f"{source}: Hub dataset {dataset} config {config!r} split {split!r} could not be loaded: "
            f"{type(error).__name__}: {detail}"
        ) from error
