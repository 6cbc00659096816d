"""certificate.json: a run's verdict bound to the bytes it audited; `verify` of a file about to ship.

The certificate holds the sha256 of every file of every artifact the verdict was computed from:

- each audited checkpoint (the target, the retrain model, each unlearned model: `audited.json`, or
  the `checkpoint` its results lines record in a folder without one; a GGUF checkpoint is its file);
- each column's product of it that the run cached (`RunFolder.column_cache`): a quantized cell
  (its codes and changed tensors, or the GGUF file llama.cpp wrote, which holds the whole model) or
  a relearned checkpoint. Columns whose product is not cached (`fp`: the checkpoint itself) have none;
- the recipe as recorded (recipe.yaml), results.jsonl and verdict.json, and the data: every file
  of `data.source` when it is a folder (a superset of the forget and holdout files the loaders
  read); a source that is no folder (`demo`, which ships with llm-unlearn, or a Hub dataset id) is
  recorded by name, not hashed.

Beside them: whether checkpoints' own Python code was run (`model.trust_remote_code`), the
versions of torch, transformers and llm-unlearn (`importlib.metadata`), each
column's recorded configuration (a backend's library version is part of it) and how its cells were
evaluated, the verdict settings (thresholds, bootstrap seed, resamples, confidence) and the gate's
`--fail-above` when one was given, and per unlearned model its verdict, worst cell and whether it
passes the gate. Nothing in it depends on when it was written: the same run folder gives the same
file byte for byte, and its `sha256` field is the sha256 of the rest (canonical JSON: sorted keys,
no spaces), one name for the whole certificate.

Checkpoints run to GBs: writing the certificate hashes through the run folder's memo
(`filehash.HashMemo`, `RunFolder.hashes`), so a report, or the gate's threshold, rewriting it reads
only the files changed since. `verify` trusts no memo: it reads every byte of the file to ship.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from llm_unlearn.audit import stats
from llm_unlearn.audit.report import VERDICT_ORDER, failing_cells
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.errors import UserError
from llm_unlearn.filehash import HashMemo, sha256_files
from llm_unlearn.runfolder import RunFolder, read_json, write_atomic

#: the libraries every audit ran on; a column's own backend is in its recorded configuration
LIBRARIES = ("torch", "transformers", "llm-unlearn")
#: the model verdicts that pass the gate: `holds` and what VERDICT_ORDER puts after it (excluded)
PASSING = VERDICT_ORDER[VERDICT_ORDER.index(stats.HOLDS) :]
NOT_HASHED = (
    "not a local folder: recorded by name (the demo data ship with llm-unlearn, whose version is "
    "recorded; a Hub dataset is fetched by its id)"
)


def file_digests(path: Path, memo: HashMemo | None = None) -> dict[str, str] | None:
    """{path relative to `path`: sha256} of every file under the folder `path`, or {its name: sha256}
    for a file; None where nothing is there (a checkpoint moved away since the audit). Through `memo`
    where one is given (`filehash.sha256_files`)."""
    if path.is_file():
        return {path.name: sha256_files([path], memo)[path]}
    if not path.is_dir():
        return None
    files = [p for p in sorted(path.rglob("*")) if p.is_file()]
    return {p.relative_to(path).as_posix(): d for p, d in sha256_files(files, memo).items()}


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return None


def _artifact(model: str, target: str, column: str | None, path: Path, memo: HashMemo) -> dict[str, Any]:
    return {
        "model": model,
        "target": target,
        "column": column,
        "path": str(path),
        "files": file_digests(path, memo),
    }


def _artifacts(folder: RunFolder, results: list[dict[str, Any]], memo: HashMemo) -> list[dict[str, Any]]:
    """Each audited checkpoint, then each of its columns' cached products, by model and column."""
    # an empty path would be the working folder: a line that names no checkpoint names none
    checkpoints = {(r["model"], r["target"]): r["checkpoint"] for r in results if r.get("checkpoint")}
    checkpoints |= {(e["name"], e["target"]): e["checkpoint"] for e in folder.read_audited()}
    columns: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in results:
        columns[(r["model"], r["target"])].add(r["quantizer"])
    found = []
    for (model, target), checkpoint in sorted(checkpoints.items()):
        found.append(_artifact(model, target, None, Path(checkpoint), memo))
        for column in sorted(columns[(model, target)]):
            cache_dir = folder.column_cache(f"{model}@{target}", column)
            if cache_dir is not None:
                found.append(_artifact(model, target, column, cache_dir, memo))
    return found


def _data(recipe: dict[str, Any] | None, memo: HashMemo) -> dict[str, Any]:
    source = str(((recipe or {}).get("data") or {}).get("source", "demo"))
    files = file_digests(Path(source), memo) if Path(source).is_dir() else None
    return {"source": source, "files": files, **({} if files is not None else {"note": NOT_HASHED})}


def _columns(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each column's recorded configuration and the ways its cells were evaluated."""
    configs = {r["quantizer"]: r.get("quantizer_config", {}) for r in results}
    ways: dict[str, set[str]] = defaultdict(set)
    for r in results:
        if r.get("evaluation"):
            ways[r["quantizer"]].add(r["evaluation"])
    return {name: {"config": config, "evaluation": sorted(ways[name])} for name, config in configs.items()}


def passes(
    model: dict[str, Any], verdict: dict[str, Any], fail_above: float | None, fail_on: str = "any"
) -> bool:
    """Whether verdict.json's answer `model` passes the gate on the routes `fail_on` names: its
    verdict there (overall for `any`; a route without a column has nothing against it) is one of
    `PASSING` and, under a `fail_above` threshold, none of its cells is among the gate's
    `failing_cells`."""
    worst = model if fail_on == "any" else model.get("routes", {}).get(fail_on)
    if worst is not None and worst["verdict"] not in PASSING:
        return False
    failing = failing_cells(verdict, fail_above, fail_on) if fail_above is not None else []
    return not any((c["model"], c["target"]) == (model["model"], model["target"]) for c in failing)


def _recorded(path: Path, memo: HashMemo) -> str | None:
    return sha256_files([path], memo)[path] if path.is_file() else None


def certificate(run_dir: Path, fail_above: float | None = None, fail_on: str = "any") -> dict[str, Any]:
    """The certificate of the run folder `run_dir`, whose verdict.json is written."""
    folder = RunFolder(run_dir)
    results = list(ResultsFile(folder.results, write=False))
    verdict = read_json(folder.verdict)
    recipe = folder.read_recipe()
    memo = HashMemo(folder.hashes)
    body = {
        "artifacts": _artifacts(folder, results, memo),
        "records": {p.name: _recorded(p, memo) for p in (folder.recipe, folder.results, folder.verdict)},
        "data": _data(recipe, memo),
        # whether the audit ran checkpoints' own Python code (model.trust_remote_code): a verdict on
        # code the user vouched for, not only on weights
        "trust_remote_code": bool(((recipe or {}).get("model") or {}).get("trust_remote_code", False)),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "columns": _columns(results),
        "gate": {"settings": verdict["settings"], "fail_above": fail_above, "fail_on": fail_on},
        "models": [{**m, "passes": passes(m, verdict, fail_above, fail_on)} for m in verdict["models"]],
    }
    return {"sha256": hashlib.sha256(_canonical(body).encode()).hexdigest(), **body}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def write_certificate(run_dir: Path, fail_above: float | None = None, fail_on: str = "any") -> Path:
    """Write run_dir/certificate.json (atomically) and return its path."""
    found = certificate(run_dir, fail_above, fail_on)
    return write_atomic(RunFolder(run_dir).certificate, json.dumps(found, sort_keys=True, indent=1) + "\n")


def _name(artifact: dict[str, Any]) -> str:
    return f"{artifact['model']}@{artifact['target']} {artifact['column'] or 'checkpoint'}"


def verify(run_dir: Path, shipped: Path) -> tuple[bool, str]:
    """Whether the file or folder `shipped` is covered by run_dir's certificate (every file's sha256
    is one file of one audited artifact) and its model passes the gate; with one line saying so.
    Every byte of `shipped` is read, through no memo: a memo trusts a file's stat, and this answer
    is the promise about what ships."""
    path = RunFolder(run_dir).require_certificate()
    digests = file_digests(shipped)
    if not digests:
        raise UserError(f"{shipped}: no such file, or a folder with no files in it")
    cert = read_json(path)
    artifacts = [a for a in cert["artifacts"] if a["files"]]
    known = {d for a in artifacts for d in a["files"].values()}
    unknown = sorted(name for name, d in digests.items() if d not in known)
    if unknown:
        first = unknown[0]
        more = f" and {len(unknown) - 1} more files" if len(unknown) > 1 else ""
        named = [_name(a) for a in artifacts if first in a["files"]]
        why = (
            f"differ from the file of that name in {named[0]}"
            + (f" and {len(named) - 1} more artifacts" if len(named) > 1 else "")
            + ": changed since the audit"
            if named
            else "match no file the certificate covers: never audited"
        )
        return False, f"NOT COVERED: {shipped}: {first} (sha256 {digests[first][:12]}…){more} {why}"
    holders = [a for a in artifacts if set(digests.values()) <= set(a["files"].values())]
    if not holders:
        return (
            False,
            f"NOT COVERED: {shipped}: its files come from different audited artifacts, none holds them all",
        )
    models = {(m["model"], m["target"]): m for m in cert["models"]}
    judged = [(a, models[(a["model"], a["target"])]) for a in holders if (a["model"], a["target"]) in models]
    if not judged:
        return False, (
            f"FAIL: {shipped}: covered as {', '.join(_name(a) for a in holders)}, which has no verdict "
            "(the target, the retrain model or a model without a gating cell)"
        )
    ok = all(m["passes"] for _, m in judged)
    answers = "; ".join(
        f"{_name(a)}: {m['verdict']}" + ("" if m["passes"] else " (fails the gate)") for a, m in judged
    )
    return ok, f"{'PASS' if ok else 'FAIL'}: {shipped}: covered as {answers}"
