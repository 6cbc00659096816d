"""The run folder's layout: target labels, and run folders of older versions read as they are
(results and audited.json lines relabelled, checkpoints and caches found under their old names)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

import pytest
from conftest import old_run_folder

from llm_unlearn.audit.cache import cell_folder
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.errors import UserError
from llm_unlearn.recipe import validate_recipe
from llm_unlearn.runfolder import RunFolder, located

DEMO_LIKE = {
    "name": "old",
    "model": {"target": "demo", "retrain": "demo", "grid_align": "rtn-w4-g32"},
    "method": [{"name": "ga_gdr"}, {"name": "npo", "targets": ["grid-aligned"]}],
    "output": {"dir": "unused"},
}
AUDIT_ONLY = {
    "name": "old-audit",
    "model": {"target": "demo", "retrain": "demo"},
    "models": [{"name": "plain", "path": "demo"}],
    "output": {"dir": "unused"},
}


def labels(path: Path) -> set[tuple[str, str]]:
    return {(r["model"], r["target"]) for r in ResultsFile(path)}


def test_an_old_run_folder_reads_with_todays_labels(tmp_path) -> None:
    root = old_run_folder(tmp_path / "run", DEMO_LIKE)
    assert "grid" in (root / "results.jsonl").read_text()  # as the old version wrote it
    assert labels(root / "results.jsonl") == {
        ("target", "natural"),
        ("target", "grid-aligned"),
        ("retrain", "-"),
        ("ga_gdr", "natural"),
        ("ga_gdr", "grid-aligned"),
        ("npo", "grid-aligned"),
    }
    folder = RunFolder(root)
    assert ("npo", "grid-aligned") in {(e["name"], e["target"]) for e in folder.read_audited()}
    # every model's files under their old names, where only those exist
    assert folder.checkpoint("npo@grid-aligned") == root / "models" / "npo@grid"
    assert folder.checkpoint("ga_gdr@natural") == root / "models" / "ga_gdr@natural"
    assert folder.training_log("npo@grid-aligned") == root / "models" / "npo@grid.log.json"
    assert folder.method_file("npo@grid-aligned") == root / "models" / "npo@grid.method.json"
    assert folder.quantized("npo@grid-aligned") == root / "quantized" / "npo@grid"
    assert cell_folder(folder.quantized_root, "npo@grid-aligned", "rtn-w4-g32").is_dir()
    assert folder.relearned("npo@grid-aligned", "relearn-forget-10").is_dir()
    # what nothing made yet gets today's name; a new-named folder wins over an old one
    assert folder.checkpoint("oeu@grid-aligned") == root / "models" / "oeu@grid-aligned"
    (root / "models" / "npo@grid-aligned").mkdir()
    assert folder.checkpoint("npo@grid-aligned") == root / "models" / "npo@grid-aligned"
    # the stored recipe's `targets: [grid]` validates to the new label
    stored = folder.read_recipe()
    assert stored["method"][1]["targets"] == ["grid"]
    assert validate_recipe(stored).method[1].targets == ("grid-aligned",)


def test_an_old_audit_labels_its_target_target(tmp_path) -> None:
    """An audit's target was `natural`; today it is `target` (no model.name): lines, audited.json
    and the audited model's merged checkpoint follow."""
    root = old_run_folder(tmp_path / "run", AUDIT_ONLY)
    assert labels(root / "results.jsonl") == {("target", "target"), ("retrain", "-"), ("plain", "target")}
    folder = RunFolder(root)
    assert {e["target"] for e in folder.read_audited()} == {"target", "-"}
    assert folder.checkpoint("plain@target") == root / "models" / "plain@natural"
    assert folder.quantized("plain@target") == root / "quantized" / "plain@natural"
    # a results file beside no recipe keeps its labels (all but the renamed `grid`)
    lone = tmp_path / "lone" / "results.jsonl"
    lone.parent.mkdir()
    lines = [{"model": "m", "target": t, "quantizer": "fp", "metric": "verbmem"} for t in ("natural", "grid")]
    lone.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert labels(lone) == {("m", "natural"), ("m", "grid-aligned")}


def test_an_old_name_is_looked_up_only_for_labels_that_had_one(tmp_path) -> None:
    for old in ("ga@natural", "ga@grid"):
        (tmp_path / old).mkdir()
    assert located(tmp_path, "ga@grid-aligned") == tmp_path / "ga@grid"
    assert located(tmp_path, "ga@target") == tmp_path / "ga@natural"
    assert located(tmp_path, "ga@-") == tmp_path / "ga@-"
    assert located(tmp_path, "ga") == tmp_path / "ga"


def _hold(lock: Path) -> int:
    """Another run's claim on a folder: an open descriptor with an exclusive flock on its `.lock`."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"pid 4242 on elsewhere")
    return fd


def test_one_run_writes_a_folder_at_a_time_and_a_dead_runs_lock_is_not_stale(tmp_path) -> None:
    folder = RunFolder(tmp_path / "run")
    other = _hold(folder.lock)
    with pytest.raises(UserError, match=r"another run \(pid 4242 on elsewhere\) is writing this folder"):
        folder.claim()
    os.close(other)  # that run exits (or crashes): the kernel drops its lock, its file stays
    assert folder.lock.read_text() == "pid 4242 on elsewhere"
    folder.claim()
    assert folder.lock.read_text() == f"pid {os.getpid()} on {socket.gethostname()}"
    folder.claim()  # this process's own claim again: nothing to do
    with pytest.raises(BlockingIOError):  # held: a third party cannot take it
        _hold(folder.lock)
    folder.release()
    os.close(_hold(folder.lock))  # released: it can
    folder.release()  # nothing held: a no-op


def test_a_columns_cache_is_found_in_whichever_root_holds_it(tmp_path) -> None:
    folder = RunFolder(tmp_path)
    (tmp_path / "quantized" / "ga@natural" / "rtn-w4-g32").mkdir(parents=True)
    (tmp_path / "relearned" / "ga@grid" / "relearn-forget").mkdir(parents=True)  # an old label
    assert (
        folder.column_cache("ga@natural", "rtn-w4-g32")
        == tmp_path / "quantized" / "ga@natural" / "rtn-w4-g32"
    )
    assert (
        folder.column_cache("ga@grid-aligned", "relearn-forget")
        == tmp_path / "relearned" / "ga@grid" / "relearn-forget"
    )
    assert folder.column_cache("ga@natural", "fp") is None
    assert folder.column_cache("ga@natural", "relearn-forget") is None


def test_a_folder_without_a_run_or_a_certificate_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    with pytest.raises(UserError, match=r"no recipe\.yaml and results\.jsonl here; give the folder a run"):
        folder.require_run()
    with pytest.raises(UserError, match=r"no certificate\.json here; .*llm-unlearn report"):
        folder.require_certificate()
    folder.recipe.write_text("name: r\n")
    with pytest.raises(UserError, match="no recipe.yaml and results.jsonl"):  # both are needed
        folder.require_run()
    folder.results.write_text("")
    folder.certificate.write_text("{}")
    folder.require_run()
    assert folder.require_certificate() == tmp_path / "certificate.json"
