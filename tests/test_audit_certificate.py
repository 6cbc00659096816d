"""certificate.json: every audited file's sha256 beside the verdict, the same for the same folder;
`llm-unlearn verify` accepts the files audited and refuses one changed by a byte."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from helpers import gate_results

from llm_unlearn.audit.certificate import certificate, passes, verify, write_certificate
from llm_unlearn.audit.write import write_report
from llm_unlearn.cli import main
from llm_unlearn.errors import UserError
from llm_unlearn.runfolder import RunFolder

MODELS = {"target": "natural", "retrain": "-", "weak": "natural", "ga": "natural", "oeu": "natural"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """A run folder as a run leaves it: results, recipe, audited.json (all but the retrain model,
    whose results lines name its checkpoint), checkpoints with a shared config.json, a cached
    quantized cell for ga and a GGUF file kept in oeu's, and a data folder."""
    monkeypatch.chdir(tmp_path)  # the results lines' checkpoints are relative: checkpoints/<model>
    for i, model in enumerate(MODELS):
        ckpt = tmp_path / "checkpoints" / model
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text('{"model_type": "llama"}')
        (ckpt / "model.safetensors").write_bytes(bytes([i]) * 1000)
    data = tmp_path / "data" / "news"
    data.mkdir(parents=True)
    (data / "forget.json").write_text('["forget me"]')
    (data / "holdout.json").write_text('["keep me"]')
    root = tmp_path / "run"
    folder = RunFolder(root)
    root.mkdir()
    recipe = {"name": "t", "data": {"source": str(tmp_path / "data")}, "verdict": {"resamples": 200}}
    folder.recipe.write_text(yaml.safe_dump(recipe))
    folder.results.write_text("".join(json.dumps(r) + "\n" for r in gate_results()))
    folder.write_audited(
        [
            {"name": m, "target": t, "checkpoint": str(tmp_path / "checkpoints" / m), "source": m}
            for m, t in MODELS.items()
            if m != "retrain"
        ]
    )
    cell = folder.quantized("ga@natural") / "rtn-w4-g32"
    cell.mkdir(parents=True)
    (cell / "codes.safetensors").write_bytes(b"codes of ga")
    (cell / "quantizer.json").write_text('{"name": "rtn-w4-g32"}')
    gguf = folder.quantized("oeu@natural") / "rtn-w4-g32"
    gguf.mkdir(parents=True)
    (gguf / "model.gguf").write_bytes(b"GGUF" + bytes(range(256)))
    write_report(root)
    return root


def test_the_certificate_holds_every_audited_files_sha256(run_dir, tmp_path) -> None:
    cert = json.loads(RunFolder(run_dir).certificate.read_text())
    by_name = {(a["model"], a["column"]): a for a in cert["artifacts"]}
    assert set(by_name) == {(m, None) for m in MODELS} | {("ga", "rtn-w4-g32"), ("oeu", "rtn-w4-g32")}
    for model in MODELS:  # retrain's from its results lines, the others' from audited.json
        ckpt = tmp_path / "checkpoints" / model
        assert by_name[(model, None)]["files"] == {p.name: sha(p) for p in ckpt.iterdir()}
    gguf = RunFolder(run_dir).quantized("oeu@natural") / "rtn-w4-g32" / "model.gguf"
    assert by_name[("oeu", "rtn-w4-g32")]["files"] == {"model.gguf": sha(gguf)}
    assert set(by_name[("ga", "rtn-w4-g32")]["files"]) == {"codes.safetensors", "quantizer.json"}
    data = tmp_path / "data"
    assert cert["data"]["files"] == {f"news/{p.name}": sha(p) for p in (data / "news").iterdir()}
    folder = RunFolder(run_dir)
    assert cert["records"] == {p.name: sha(p) for p in (folder.recipe, folder.results, folder.verdict)}
    assert set(cert["libraries"]) == {"torch", "transformers", "llm-unlearn"}
    assert cert["libraries"]["torch"] == version("torch")
    assert cert["columns"]["rtn-w4-g32"] == {
        "config": {"name": "rtn-w4-g32", "method": "rtn"},
        "evaluation": ["simulated"],
    }
    settings = cert["gate"]["settings"]
    assert (settings["holds_below"], settings["fails_from"], settings["resamples"]) == (25, 50, 200)
    assert (settings["seed"], settings["confidence"], cert["gate"]["fail_above"]) == (0, 0.95, None)
    verdicts = {m["model"]: (m["verdict"], m["quantizer"], m["passes"]) for m in cert["models"]}
    assert verdicts == {
        "weak": ("not forgotten", "fp", False),
        "ga": ("fails", "rtn-w4-g32", False),
        "oeu": ("holds", "rtn-w4-g32", True),
    }
    body = {k: v for k, v in cert.items() if k != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert cert["sha256"] == hashlib.sha256(canonical).hexdigest()


def test_the_same_folder_gives_the_same_certificate(run_dir) -> None:
    path = RunFolder(run_dir).certificate
    first = path.read_bytes()
    assert write_certificate(run_dir) == path and path.read_bytes() == first
    # a gate's threshold is part of it: oeu's 10 % is above a 5 % gate
    gated = certificate(run_dir, fail_above=5)
    assert gated["gate"]["fail_above"] == 5 and gated["sha256"] != json.loads(first)["sha256"]
    assert not any(m["passes"] for m in gated["models"])


def test_a_results_line_without_a_checkpoint_hashes_nothing_for_it(run_dir) -> None:
    folder = RunFolder(run_dir)
    folder.audited.unlink()
    lines = [{**json.loads(line), "checkpoint": ""} for line in folder.results.read_text().splitlines()]
    folder.results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [a["column"] for a in certificate(run_dir)["artifacts"]] == []


def test_a_data_source_that_is_no_folder_is_recorded_by_name(run_dir) -> None:
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"name": "t", "data": {"source": "demo"}}))
    data = certificate(run_dir)["data"]
    assert (data["source"], data["files"]) == ("demo", None) and "not a local folder" in data["note"]


def test_verify_accepts_the_audited_files_and_refuses_a_changed_copy(run_dir, tmp_path, capsys) -> None:
    oeu = tmp_path / "checkpoints" / "oeu"
    assert main(["verify", str(run_dir), str(oeu)]) == 0
    assert capsys.readouterr().out == f"PASS: {oeu}: covered as oeu@natural checkpoint: holds\n"
    assert main(["verify", str(run_dir), str(oeu / "model.safetensors")]) == 0
    gguf = RunFolder(run_dir).quantized("oeu@natural") / "rtn-w4-g32" / "model.gguf"
    assert main(["verify", str(run_dir), str(gguf)]) == 0
    assert "covered as oeu@natural rtn-w4-g32: holds" in capsys.readouterr().out

    changed = tmp_path / "ship"
    shutil.copytree(oeu, changed)
    weights = bytearray((changed / "model.safetensors").read_bytes())
    weights[500] ^= 1
    (changed / "model.safetensors").write_bytes(bytes(weights))
    assert main(["verify", str(run_dir), str(changed)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        f"NOT COVERED: {changed}: model.safetensors (sha256 {sha(changed / 'model.safetensors')[:12]}"
    )
    assert (
        "differ from the file of that name in ga@natural checkpoint and 4 more artifacts: changed" in out
        and "changed since" in out
    )
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"never audited")
    assert main(["verify", str(run_dir), str(stray)]) == 1
    assert "stray.bin (sha256" in (out := capsys.readouterr().out) and "never audited" in out

    assert main(["verify", str(run_dir), str(tmp_path / "checkpoints" / "ga")]) == 1
    assert (
        "FAIL: " in (out := capsys.readouterr().out)
        and "ga@natural checkpoint: fails (fails the gate)" in out
    )
    assert main(["verify", str(run_dir), str(tmp_path / "checkpoints" / "target")]) == 1
    assert "which has no verdict" in capsys.readouterr().out
    # the config all checkpoints share: it is oeu's, but ga's and weak's too, which fail
    ok, line = verify(run_dir, oeu / "config.json")
    assert (
        not ok
        and "oeu@natural checkpoint: holds" in line
        and "weak@natural checkpoint: not forgotten" in line
    )


def test_verify_says_in_one_line_what_is_missing(run_dir, tmp_path, capsys) -> None:
    assert main(["verify", str(run_dir), str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "data"), str(tmp_path / "checkpoints" / "oeu")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no certificate.json here" in err
    with pytest.raises(UserError, match="no such file"):
        verify(run_dir, tmp_path / "nowhere")


def test_the_gate_records_its_threshold(run_dir, monkeypatch) -> None:
    monkeypatch.setattr("llm_unlearn.pipeline.run", lambda recipe: run_dir)
    assert main(["demo", "--fail-above", "5"]) == 1
    cert = json.loads(RunFolder(run_dir).certificate.read_text())
    assert cert["gate"]["fail_above"] == 5 and not any(m["passes"] for m in cert["models"])
    assert main(["verify", str(run_dir), str(run_dir.parent / "checkpoints" / "oeu")]) == 1


def test_a_gate_on_one_route_passes_a_model_that_fails_only_on_the_other() -> None:
    shipped_fails = {"model": "m", "target": "t", "verdict": "fails"}
    shipped_fails["routes"] = {"shipped": {"verdict": "fails"}, "attack": {"verdict": "holds"}}
    cell = {
        "model": "m",
        "target": "t",
        "gates": True,
        "route": "shipped",
        "verdict": "fails",
        "recovery": 80.0,
    }
    verdict = {"models": [shipped_fails], "cells": [cell]}
    assert not passes(shipped_fails, verdict, 50) and not passes(shipped_fails, verdict, 50, "shipped")
    assert passes(shipped_fails, verdict, 50, "attack")
    shipped_fails["routes"]["attack"] = None  # no attack column: nothing stands against it there
    assert passes(shipped_fails, verdict, 50, "attack")


def test_a_report_reads_only_the_files_changed_since_the_last(run_dir, reads) -> None:
    folder = RunFolder(run_dir)
    folder.hashes.unlink(missing_ok=True)  # a folder of an older version: no memo yet
    cert = json.loads(write_certificate(run_dir).read_text())
    hashed = [d for a in cert["artifacts"] for d in a["files"].values()]
    hashed += [*cert["data"]["files"].values(), *cert["records"].values()]
    assert len(reads) == len(hashed) == 18  # every file, as every report read them before the memo
    reads.clear()
    assert json.loads(write_certificate(run_dir).read_text()) == cert
    assert reads == []  # the same folder again: nothing read
    folder.recipe.write_text(folder.recipe.read_text() + "# edited\n")
    assert write_certificate(run_dir) and reads == [folder.recipe]


def test_verify_reads_every_byte_and_refuses_a_byte_changed_with_size_and_mtime_kept(
    run_dir, tmp_path, reads, capsys
) -> None:
    weights = tmp_path / "checkpoints" / "oeu" / "model.safetensors"
    write_certificate(run_dir)  # the memo now holds the audited file's sha256
    before = weights.stat()
    changed = bytearray(weights.read_bytes())
    changed[500] ^= 1
    weights.write_bytes(bytes(changed))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    reads.clear()
    assert main(["verify", str(run_dir), str(weights)]) == 1
    assert reads == [weights] and "NOT COVERED" in capsys.readouterr().out
