"""Every bad input a clear line: each case runs the CLI as a user would and must end with exit code 2,
ONE line on stderr naming the field and what is allowed, no traceback, and no new file anywhere in
the workspace (a failed start claims no run folder)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pickle
import resource
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import char_tokenizer, demo_bench_subset, tiny_llama
from helpers import hub_snapshot, remote_code_checkpoint, write_tiny_gguf
from safetensors import SafetensorError
from transformers import modeling_utils

from llm_unlearn.audit import run as audit_run
from llm_unlearn.cli import main
from llm_unlearn.errors import UserError, writing
from llm_unlearn.models import check_gguf_header, save_checkpoint
from llm_unlearn.recipe import validate_recipe

KEEP = {"raw": 3, "verbmem": 2, "knowmem": 2, "privleak": 3}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """Read-only material every case may use: checkpoints and a MUSE folder."""
    root = tmp_path_factory.mktemp("shared")
    tok = char_tokenizer()
    paths = {
        "target": save_checkpoint(tiny_llama(tok), tok, root / "target"),
        "wide": save_checkpoint(tiny_llama(tok, hidden_size=64, intermediate_size=128), tok, root / "wide"),
        "muse": demo_bench_subset(root / "muse", KEEP),
    }
    pickled = root / "pickled"
    save_checkpoint(tiny_llama(tok), tok, pickled)
    model = tiny_llama(tok)
    (pickled / "model.safetensors").unlink()
    import torch

    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    paths["pickled"] = pickled
    corrupt = save_checkpoint(tiny_llama(tok), tok, root / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    paths["corrupt"] = corrupt
    nopad = save_checkpoint(tiny_llama(tok), tok, root / "nopad")
    config = json.loads((nopad / "tokenizer_config.json").read_text())
    for key in ("pad_token", "eos_token"):
        config.pop(key, None)
    (nopad / "tokenizer_config.json").write_text(json.dumps(config))
    special = nopad / "special_tokens_map.json"
    if special.exists():
        special.unlink()
    paths["nopad"] = nopad
    other_tok = save_checkpoint(tiny_llama(tok), tok, root / "othertok")
    vocab = json.loads((other_tok / "tokenizer.json").read_text())
    vocab["model"]["vocab"]["zz"] = vocab["model"]["vocab"].pop("z")
    (other_tok / "tokenizer.json").write_text(json.dumps(vocab))
    paths["othertok"] = other_tok
    noweights = save_checkpoint(tiny_llama(tok), tok, root / "noweights")
    (noweights / "model.safetensors").unlink()
    paths["noweights"] = noweights
    return paths


def base_recipe(shared: dict[str, Path], out: Path) -> dict[str, Any]:
    return {
        "name": "bad",
        "model": {"target": str(shared["target"])},
        "data": {"source": str(shared["muse"]), "max_length": 32},
        "method": [{"name": "ga"}],
        "train": {"max_steps": 1, "per_device_train_batch_size": 2},
        "quantize": ["rtn-w4-g32"],
        "evaluate": ["verbmem"],
        "output": {"dir": str(out)},
    }


def edit(path: str, value: Any) -> Callable[[dict], None]:
    """A recipe change: set `a.b.0.c` to `value` (None deletes the key)."""

    def apply(recipe: dict) -> None:
        *parents, leaf = path.split(".")
        node: Any = recipe
        for key in parents:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        if value is None:
            del node[leaf]
        elif leaf.isdigit():
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return apply


def shared_path(name: str) -> Callable[[dict[str, Path]], str]:
    return lambda shared: str(shared[name])


# (id, recipe changes, expected text in the one error line); each runs `run` on the recipe
RECIPE_CASES: list[tuple[str, list, str]] = [
    ("unknown-section", [edit("extra", 1)], "extra: unknown field; allowed here: name, model"),
    ("unknown-method", [edit("method.0.name", "gax")], "unknown method 'gax'; known: "),
    ("unknown-quantizer", [edit("quantize", ["xyz-w4"])], "unknown quantizer 'xyz-w4'"),
    ("malformed-rtn", [edit("quantize", ["rtn-w5"])], "quantize: malformed name 'rtn-w5'; expected rtn-w{2,3,4,8}"),
    ("unknown-metric", [edit("evaluate", ["verbmemx"])], "unknown metric 'verbmemx'"),
    ("no-model", [edit("model", None)], "model: required field is missing"),
    ("no-target", [edit("model.target", None)], "model.target: required field is missing"),
    ("no-output", [edit("output", None)], "output: required field is missing"),
    ("train-unknown", [edit("train.lerning_rate", 1)], "did you mean 'learning_rate'"),
    ("lr-negative", [edit("train.learning_rate", -1)], "train: learning_rate: must be > 0"),
    ("lr-nan", [edit("train.learning_rate", float("nan"))], "learning_rate: must be a finite number"),
    ("lr-inf", [edit("train.learning_rate", float("inf"))], "learning_rate: must be a finite number"),
    ("batch-zero", [edit("train.per_device_train_batch_size", 0)], "per_device_train_batch_size: must be >= 1"),
    ("eval-batch-zero", [edit("train.per_device_eval_batch_size", 0)], "per_device_eval_batch_size: must be >= 1"),
    ("epochs-negative", [edit("train.max_steps", None), edit("train.num_train_epochs", -1)], "num_train_epochs: must be > 0"),
    ("max-steps-zero", [edit("train.max_steps", 0)], "max_steps: must be -1"),
    ("accumulation-zero", [edit("train.gradient_accumulation_steps", 0)], "gradient_accumulation_steps: must be >= 1"),
    ("warmup-negative", [edit("train.warmup_steps", -3)], "warmup_steps: must be >= 0"),
    ("decay-negative", [edit("train.weight_decay", -0.1)], "weight_decay: must be >= 0"),
    ("train-type", [edit("train.learning_rate", "fast")], "learning_rate: Input should be a valid number"),
    ("reserved-train", [edit("train.output_dir", "/x")], "'output_dir' is set by the recipe's method/output"),
    ("beta-zero", [edit("method.0.beta", 0)], "method.0.beta: Input should be greater than 0"),
    ("retain-weight", [edit("method.0.retain_weight", -1)], "method.0.retain_weight: Input should be greater"),
    ("method-lr", [edit("method.0.learning_rate", 0)], "method.0.learning_rate: Input should be greater than 0"),
    ("same-run-twice", [edit("method", [{"name": "ga"}, {"name": "ga"}])], "method.1: a second run named 'ga'"),
    ("sure-101", [edit("method.0.sure", {"percentile": 101})], "method.0.sure.percentile"),
    ("quail-margin", [edit("method.0.quail", {"margin": -1})], "margin must be >= 0 or 'auto'"),
    ("quail-non-rtn", [edit("method.0.quail", {"quantizer": "bnb-nf4"})], "margin auto is defined on an RTN grid"),
    ("projection-ga", [edit("method.0.projection", {"alpha": 1})], "projection applies to methods"),
    ("grid-without-align", [edit("method.0.targets", ["grid-aligned"])], "asks for 'grid-aligned' but model.grid_align"),
    ("lora-sure", [edit("model.lora", {"r": 2}), edit("method.0.sure", {})], "model.lora with a method's sure"),
    ("label-chars", [edit("method.0.label", "a b")], "method.0.label: String should match pattern"),
    ("stop-metric", [edit("method.0.stop", {"metric": "nope", "below": 1})], "unknown metric 'nope'"),
    ("relearn-samples", [edit("relearn", [{"split": "forget", "samples": 0}])], "relearn.0.samples"),
    ("relearn-split", [edit("relearn", [{"split": "holdout"}])], "relearn.0.split: Input should be 'forget'"),
    ("relearn-column", [edit("relearn", [{"split": "forget", "label": "rtn-w4-g32"}])], "is also a quantizer's"),
    ("relearn-too-many", [edit("relearn", [{"split": "forget", "samples": 50}])], "relearn.0.samples: 50, but forget has 3"),
    ("calibration-forget", [edit("calibration", {"source": "forget"})], "set allow_forget: true"),
    ("calibration-file", [edit("calibration", {"source": "/no/such.txt"})], "is not generic, retain, forget or a text file"),
    ("quantize-source-rtn", [edit("quantize", ["rtn-w4-g32@forget"])], "rtn-w4-g32 reads no calibration text"),
    ("quantize-source-unknown", [edit("quantize", ["gptq-w4-g32@test"])], "@test is not a calibration source"),
    ("max-length", [edit("data.max_length", 4)], "data.max_length: Input should be greater than or equal to 8"),
    ("gguf-name", [edit("model.gguf_file", "x.bin")], "'x.bin' is not a .gguf file name"),
    ("grid-align-unknown", [edit("model.grid_align", "zzz")], "unknown quantizer 'zzz'"),
    ("models-target", [edit("models", [{"name": "target", "path": "org/x"}])], "names the reference rows"),
    ("models-twice", [edit("method", []), edit("models", [{"name": "a", "path": "org/x"}, {"name": "a", "path": "org/y"}])], "models.1: a second run named 'a'"),
    ("models-method-name", [edit("models", [{"name": "ga", "path": "org/x"}])], "models.0: 'ga' is also a method run's name"),
    ("nothing-to-audit", [edit("method", [])], "nothing to audit: give a method section"),
    ("target-missing", [edit("model.target", "/no/such/model")], "model.target: folder '/no/such/model' not found"),
    ("retrain-missing", [edit("model.retrain", "/no/retrain")], "model.retrain: folder '/no/retrain' not found"),
    ("models-missing", [edit("models", [{"name": "x", "path": "/no/x"}])], "models.0.path: folder '/no/x' not found"),
    ("target-no-config", [edit("model.target", "MUSE")], "holds no config.json"),
    ("target-pickle", [edit("model.target", shared_path("pickled"))], "holds weights only as pickle (pytorch_model.bin)"),
    ("target-corrupt", [edit("model.target", shared_path("corrupt"))], "is not a readable safetensors file"),
    ("target-no-pad", [edit("model.target", shared_path("nopad"))], "has neither a pad nor an eos token"),
    ("retrain-arch", [edit("model.retrain", shared_path("wide"))], "model.retrain: architecture differs from model.target's: hidden_size"),
    ("models-tokenizer", [edit("models", [{"name": "x", "path": shared_path("othertok")}])], "models.0.path: tokenizer differs"),
    ("rtn-group", [edit("quantize", ["rtn-w4-g64"])], "quantize: rtn-w4-g64 cannot quantize model.layers.0"),
    ("grid-align-group", [edit("model.grid_align", "rtn-w4-g128")], "model.grid_align: rtn-w4-g128 cannot quantize"),
    ("data-missing", [edit("data.source", "/no/data")], "data.source: folder '/no/data' not found"),
    ("data-is-file", [edit("data.source", "FILE")], "is a file; expected a folder laid out <config>/<split>.json"),
    ("data-split", [edit("data.forget_split", "forget9")], "split 'forget9'"),
    ("output-file", [edit("output.dir", "FILE")], "output.dir: "),
]  # fmt: skip

#: data-folder mistakes: (id, file to write under the copied MUSE folder, its content, expected)
DATA_CASES: list[tuple[str, str, Any, str]] = [
    ("data-not-json", "raw/forget.json", "{not json", "raw/forget.json is not valid JSON"),
    ("data-not-list", "raw/forget.json", {"a": 1}, "raw/forget: expected a JSON list of records, got dict"),
    ("data-empty-list", "raw/forget.json", [], "raw/forget: has no records"),
    ("data-empty-text", "raw/forget.json", ["", "  "], "raw/forget: record 0 is an empty text"),
    ("data-no-field", "verbmem/forget.json", [{"prompt": "x"}], "verbmem/forget: record 0 has no field 'gt'"),
    ("data-field-type", "verbmem/forget.json", [{"prompt": 1, "gt": "x"}], "field 'prompt' is int"),
    ("data-record-type", "raw/forget.json", [3], "record 0 is int; expected a string or an object"),
    ("data-empty-prompt", "verbmem/forget.json", [{"prompt": " ", "gt": "x"}], "field 'prompt' is empty"),
]  # fmt: skip


def workspace_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], expected: str) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse exits itself
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and err.splitlines() == [err], err
    assert err.startswith("llm-unlearn"), err
    assert expected in err, err
    assert len(err) < 600, len(err)


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in RECIPE_CASES], ids=[c[0] for c in RECIPE_CASES]
)
def test_recipe_mistakes(tmp_path, shared, capsys, changes, expected) -> None:
    (tmp_path / "FILE").write_text("x")
    recipe = base_recipe(shared, tmp_path / "run")
    for change in changes:
        change(recipe)
    recipe = _resolve(recipe, shared, tmp_path)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    before = workspace_files(tmp_path)
    one_line_error(capsys, ["run", str(tmp_path / "recipe.yaml")], expected)
    assert workspace_files(tmp_path) == before


def _resolve(node: Any, shared: dict[str, Path], tmp_path: Path) -> Any:
    """Replace the placeholders of a case by this test's paths."""
    if callable(node):
        return node(shared)
    if isinstance(node, dict):
        return {k: _resolve(v, shared, tmp_path) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, shared, tmp_path) for v in node]
    if node in ("FILE", "MUSE"):
        return str(tmp_path / "FILE") if node == "FILE" else str(shared["muse"])
    return node


@pytest.mark.parametrize(
    ("file", "content", "expected"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES]
)
def test_data_mistakes(tmp_path, shared, capsys, file, content, expected) -> None:
    muse = demo_bench_subset(tmp_path / "muse", KEEP)
    (muse / file).write_text(content if isinstance(content, str) else json.dumps(content))
    recipe = base_recipe(shared, tmp_path / "run")
    recipe["data"]["source"] = str(muse)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    before = workspace_files(tmp_path)
    one_line_error(capsys, ["run", str(tmp_path / "recipe.yaml")], expected)
    assert workspace_files(tmp_path) == before


# (id, recipe file bytes, --set overrides, expected)
FILE_CASES: list[tuple[str, bytes | None, list[str], str]] = [
    ("file-missing", None, [], "recipe file not found"),
    ("file-not-utf8", b"name: \xff\xfe\n", [], "not UTF-8 text (byte 6)"),
    ("file-bad-yaml", b"name: [unclosed\n", [], "not valid YAML (line 2)"),
    ("file-duplicate-key", b"name: a\nname: b\n", [], "key 'name' given twice (line 2)"),
    ("file-a-list", b"- a\n- b\n", [], "a recipe is a YAML mapping"),
    ("file-cnn", b"methods: [ga]\n", [], "a CNN-track recipe"),
    ("alias-bomb", b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nname: *e\n", [], "characters)"),
    ("set-no-equals", b"name: a\n", ["train.learning_rate"], "--set 'train.learning_rate': expected KEY.PATH=VALUE"),
    ("set-bad-yaml", b"name: a\n", ["train.learning_rate=[1"], "--set train.learning_rate: value '[1' is not valid YAML"),
    ("set-through-scalar", b"name: a\n", ["name.first=1"], "--set name.first: name is not a section"),
    ("set-empty-key", b"name: a\n", ["=3"], "expected KEY.PATH=VALUE"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "overrides", "expected"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_recipe_file_mistakes(tmp_path, capsys, content, overrides, expected) -> None:
    path = tmp_path / "recipe.yaml"
    if content is not None:
        path.write_bytes(content)
    before = workspace_files(tmp_path)
    for command in ("check", "run"):
        one_line_error(capsys, [command, str(path), *[x for o in overrides for x in ("--set", o)]], expected)
    assert workspace_files(tmp_path) == before


def test_set_values_are_validated_like_the_file(tmp_path, shared, capsys) -> None:
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(base_recipe(shared, tmp_path / "run")))
    before = workspace_files(tmp_path)
    for override, expected in [
        ("train.learning_rate=-1", "train: learning_rate: must be > 0"),
        ("quantize=[rtn-w9]", "quantize: malformed name 'rtn-w9'"),
        ("method.0.beta=-2", "method.0.beta: Input should be greater than 0"),
        ("train.num_train_epochs=.nan", "num_train_epochs: must be a finite number"),
    ]:
        one_line_error(capsys, ["run", str(tmp_path / "recipe.yaml"), "--set", override], expected)
    assert workspace_files(tmp_path) == before


def test_a_folder_of_another_experiment_is_refused_and_kept(tmp_path, shared, capsys) -> None:
    recipe = base_recipe(shared, tmp_path / "run")
    (tmp_path / "run" / "models" / "ga@natural").mkdir(parents=True)
    other = validate_recipe({**recipe, "method": [{"name": "npo"}]}).model_dump(mode="json")
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump(other))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    saved = (tmp_path / "run" / "recipe.yaml").read_text()
    before = workspace_files(tmp_path)
    one_line_error(
        capsys, ["run", str(tmp_path / "recipe.yaml")], "holds a run of a recipe with other method"
    )
    assert workspace_files(tmp_path) == before and (tmp_path / "run" / "recipe.yaml").read_text() == saved


def test_a_failed_start_leaves_the_folder_free_for_the_fixed_recipe(tmp_path, shared, capsys) -> None:
    recipe = base_recipe(shared, tmp_path / "run")
    recipe["quantize"] = ["rtn-w4-g64"]  # does not divide the tiny model's width: refused before training
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    one_line_error(capsys, ["run", str(tmp_path / "recipe.yaml")], "rtn-w4-g64 cannot quantize")
    assert not (tmp_path / "run").exists()
    # a folder an older version claimed with nothing in it is free too
    (tmp_path / "run" / "models").mkdir(parents=True)
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "method": [{"name": "npo"}]}))
    recipe["quantize"] = ["rtn-w4-g32"]
    recipe["evaluate"] = ["privleak"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "recipe.yaml")]) == 0


# (id, argv after the subcommand's required paths are filled in, expected)
CLI_CASES: list[tuple[str, list[str], str]] = [
    ("no-command", [], "the following arguments are required: command"),
    ("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("unknown-flag", ["check", "RECIPE", "--frob"], "unrecognized arguments: --frob"),
    ("evaluate-batch-zero", ["evaluate", *["--model", "TARGET", "--data", "MUSE", "--out", "OUT", "--batch-size", "0"]], "--batch-size: must be >= 1, got 0"),
    ("evaluate-batch-word", ["evaluate", *["--model", "TARGET", "--data", "MUSE", "--out", "OUT", "--batch-size", "many"]], "'many' is not a whole number"),
    ("evaluate-limit-negative", ["evaluate", *["--model", "TARGET", "--data", "MUSE", "--out", "OUT", "--limit", "-1"]], "--limit: must be >= 1, got -1"),
    ("evaluate-limit-zero", ["evaluate", *["--model", "TARGET", "--data", "MUSE", "--out", "OUT", "--limit", "0"]], "--limit: must be >= 1, got 0"),
    ("evaluate-auc-nan", ["evaluate", *["--model", "TARGET", "--data", "MUSE", "--out", "OUT", "--reference-auc", "nan"]], "an AUC in (0, 1], got nan"),
    ("evaluate-auc-big", ["evaluate", *["--model", "TARGET", "--data", "MUSE", "--out", "OUT", "--reference-auc", "2"]], "an AUC in (0, 1], got 2"),
    ("evaluate-metrics-empty", ["evaluate", "--model", "TARGET", "--data", "MUSE", "--out", "OUT", "--metrics", ""], "--metrics '': expected comma-separated names"),
    ("evaluate-metric-unknown", ["evaluate", *["--model", "TARGET", "--data", "MUSE", "--out", "OUT", "--metrics", "foo"]], "unknown metric 'foo'"),
    ("evaluate-model-missing", ["evaluate", *["--model", "/no/model", "--data", "MUSE", "--out", "OUT"]], "--model: folder '/no/model' not found"),
    ("evaluate-data-missing", ["evaluate", *["--model", "TARGET", "--data", "/no/data", "--out", "OUT"]], "--data: folder '/no/data' not found"),
    ("evaluate-out-folder", ["evaluate", *["--model", "TARGET", "--data", "MUSE", "--out", "WORK"]], "is a folder; give a JSON file name"),
    ("evaluate-no-out", ["evaluate", *["--model", "TARGET", "--data", "MUSE"]], "the following arguments are required: --out"),
    ("evaluate-pickle", ["evaluate", *["--model", "PICKLED", "--data", "MUSE", "--out", "OUT"]], "holds weights only as pickle"),
    ("report-no-results", ["report", "WORK"], "no results in results.jsonl here"),
    ("report-empty-results", ["report", "EMPTYRUN"], "no results in results.jsonl here"),
    ("report-bad-results", ["report", "BADRUN"], "results.jsonl: line 2 is not a results record"),
    ("diagnose-shapes", ["diagnose", "TARGET", "WIDE"], "UNLEARNED: architecture differs from TARGET's: hidden_size"),
    ("diagnose-missing", ["diagnose", "/no/target", "TARGET"], "TARGET: folder '/no/target' not found"),
    ("diagnose-quantizer", ["diagnose", "TARGET", "TARGET", "--quantizer", "rtn-w7"], "malformed name 'rtn-w7'"),
    ("diagnose-out-folder", ["diagnose", "TARGET", "TARGET", "--out", "WORK"], "is a folder; give a JSON file name"),
    ("audit-target-no-weights", ["audit", "--target", "NOWEIGHTS", "--model", "a=TARGET", "--data", "MUSE", "--relearn", "none", "--out", "WORK/run"], "holds a config.json but no weights"),
    ("audit-default-relearn-too-many", ["audit", "--target", "TARGET", "--model", "a=TARGET", "--data", "MUSE", "--out", "WORK/run"], "relearn.0.samples: 8, but forget has 3 texts; ask for at most that many"),
    ("audit-torn-recipe", ["audit", "--target", "TARGET", "--model", "a=TARGET", "--data", "MUSE", "--out", "TORN"], "recipe.yaml: not readable YAML"),
    ("report-torn-recipe", ["report", "TORN"], "recipe.yaml: not readable YAML"),
    ("diagnose-pickle", ["diagnose", "TARGET", "PICKLED"], "holds weights only as pickle (pytorch_model.bin), which can run code when loaded; convert it to safetensors, or allow it once with --allow-pickle"),
    ("diagnose-no-weights", ["diagnose", "NOWEIGHTS", "TARGET"], "holds a config.json but no weights"),
    ("diagnose-adapter", ["diagnose", "TARGET", "ADAPTER"], "UNLEARNED: is a PEFT adapter; `llm-unlearn audit` merges it"),
    ("diagnose-forget-text", ["diagnose", "TARGET", "TARGET", "--quantizer", "gptq-w4-g32@forget"], "--quantizer gptq-w4-g32@forget: diagnose reads no dataset"),
    ("push-no-run", ["push", "WORK", "--repo-id", "org/name", "--dry-run"], "no recipe.yaml and results.jsonl here"),
    ("push-bad-repo", ["push", "TORN", "--repo-id", "not a repo", "--dry-run"], "--repo-id 'not a repo': give ORG/NAME"),
    ("audit-recipe-and-flags", ["audit", "RECIPE", "--target", "TARGET"], "audit: give a recipe file or --target, not both"),
    ("audit-no-target", ["audit", "--model", "a=TARGET", "--data", "MUSE", "--out", "WORK/run"], "audit: --target is required"),
    ("audit-target-name", ["audit", "--target", "grid-aligned=org/t", "--model", "a=TARGET", "--data", "MUSE", "--out", "WORK/run"], "model.name: 'grid-aligned' labels other rows"),
    ("cnn-recipe-missing", ["cnn", "/no/cnn.yaml"], "recipe file not found"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_line_mistakes(tmp_path, shared, capsys, monkeypatch, argv, expected) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(base_recipe(shared, work / "run")))
    for name, lines in (
        ("emptyrun", ""),
        ("badrun", '{"model": "a", "target": "b", "quantizer": "fp", "metric": "m"}\n[1]\n'),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.jsonl").write_text(lines)
    (tmp_path / "adapter").mkdir()  # a PEFT adapter of the target
    (tmp_path / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(shared["target"])})
    )
    (tmp_path / "torn").mkdir()  # a crash of an older version mid-write, or a hand edit
    (tmp_path / "torn" / "recipe.yaml").write_text("name: t\nmodel: {target: [oops\n")
    (tmp_path / "torn" / "results.jsonl").write_text(
        '{"model": "a", "target": "b", "quantizer": "fp", "metric": "m"}\n'
    )
    places = {
        "TARGET": shared["target"], "WIDE": shared["wide"], "PICKLED": shared["pickled"], "MUSE": shared["muse"],
        "OUT": work / "out.json", "WORK": work, "RECIPE": tmp_path / "recipe.yaml",
        "EMPTYRUN": tmp_path / "emptyrun", "BADRUN": tmp_path / "badrun", "TORN": tmp_path / "torn",
        "NOWEIGHTS": shared["noweights"], "ADAPTER": tmp_path / "adapter",
    }  # fmt: skip
    argv = [str(places.get(a, a)) if a in places else a.replace("WORK", str(work)) for a in argv]
    before = workspace_files(tmp_path)
    one_line_error(capsys, argv, expected)
    assert workspace_files(tmp_path) == before


def test_a_second_run_into_a_folder_being_written_is_one_line_and_resumes_after(
    tmp_path, shared, capsys
) -> None:
    recipe = base_recipe(shared, tmp_path / "run")
    recipe["evaluate"] = ["privleak"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "run").mkdir()
    holder = os.open(tmp_path / "run" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first run, still going
    os.write(holder, b"pid 4242 on elsewhere")
    before = workspace_files(tmp_path)
    one_line_error(
        capsys, ["run", str(tmp_path / "recipe.yaml")], "another run (pid 4242 on elsewhere) is writing"
    )
    assert workspace_files(tmp_path) == before
    os.close(holder)  # it finished (or died): the folder is free, and the same command now runs
    assert main(["run", str(tmp_path / "recipe.yaml")]) == 0
    assert (tmp_path / "run" / "results.jsonl").is_file()


def test_push_without_a_token_touches_nothing(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("recipe.yaml", "results.jsonl"):  # a run folder: a folder of none is refused before
        (tmp_path / name).write_text("")
    before = workspace_files(tmp_path)
    one_line_error(capsys, ["push", str(tmp_path), "--repo-id", "org/name"], "no Hugging Face token")
    assert workspace_files(tmp_path) == before


class _RunsCode:
    """What a crafted batch file would hold: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_batch_is_refused_without_running_code(tmp_path, capsys) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}))
    recipe = tmp_path / "cnn.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "c",
                "data": {"source": "cifar10", "path": str(tmp_path)},
                "model": {"arch": "resnet18", "width": 8},
                "original": {"epochs": 1, "lr": 0.1},
                "retrain": {"epochs": 1, "lr": 0.1},
                "methods": [{"name": "ga", "epochs": 1, "lr": 0.001}],
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    before = workspace_files(tmp_path)
    one_line_error(capsys, ["cnn", str(recipe)], "refers to posix.system, which a CIFAR batch never does")
    assert not marker.exists() and workspace_files(tmp_path) == before


def _disk_full(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize(
    "raised",
    [
        _disk_full("x"),
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["enospc", "edquot", "safetensors-rust"],
)
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, raised) -> None:
    with pytest.raises(UserError) as caught, writing(tmp_path / "cell"):
        raise raised
    assert str(caught.value) == (
        f"no space left on device while writing {tmp_path / 'cell'}; free space and re-run: the run resumes"
    )


@pytest.mark.parametrize(
    "raised", [OSError(errno.EACCES, "Permission denied"), SafetensorError("header too large")]
)
def test_other_write_errors_pass_through(tmp_path, raised) -> None:
    with pytest.raises(type(raised)), writing(tmp_path / "cell"):
        raise raised


def _comparable(run: Path) -> list[dict[str, Any]]:
    """results.jsonl without timings, the run folder's own path made relative."""
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("seconds")
        record["checkpoint"] = record["checkpoint"].replace(str(run), "RUN")
    return sorted(records, key=lambda r: (r["model"], r["target"], r["quantizer"], r["metric"]))


def _full_checkpoint(filename: str) -> None:
    Path(filename).write_bytes(b"\0" * 64)  # what the disk took before it filled
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _full_cell(tensors: object, filename: str) -> None:
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _results_disk(real_write: Callable[[int, bytes], int]) -> Callable[[int, bytes], int]:
    """os.write for results.jsonl: the first line goes in, half of the second, then the disk is full."""
    lines = []

    def write(fd: int, data: bytes) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("results.jsonl"):
            return real_write(fd, data)
        lines.append(data)
        if len(lines) == 1:
            return real_write(fd, data)
        if len(lines) == 2:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise _disk_full("results.jsonl")

    return write


def test_a_disk_that_fills_is_one_line_and_the_run_resumes_to_identical_results(
    tmp_path, shared, capsys, monkeypatch
) -> None:
    recipe = base_recipe(shared, tmp_path / "clean")
    recipe["evaluate"] = ["privleak"]
    (tmp_path / "clean.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "clean.yaml")]) == 0  # undisturbed
    recipe["output"]["dir"] = str(tmp_path / "run")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    argv = ["run", str(tmp_path / "recipe.yaml")]
    run = tmp_path / "run"
    faults = [  # each fault is met by the re-run after the one before: every writer fills once
        ("transformers.modeling_utils.safe_save_file", lambda t, f, metadata=None: _full_checkpoint(f),
         f"while writing {run / 'models' / 'ga@natural'};"),
        ("llm_unlearn.audit.cache.save_file", _full_cell, f"while writing {run / 'quantized' / 'target@natural' / 'rtn-w4-g32'};"),
        ("os.write", _results_disk(os.write), f"while writing {run / 'results.jsonl'};"),
    ]  # fmt: skip
    for target, fake, expected in faults:
        with monkeypatch.context() as patched:
            patched.setattr(target, fake)
            capsys.readouterr()
            assert main(argv) == 2
            err = capsys.readouterr().err  # the run's progress, then the one line that ends it
            assert "Traceback" not in err, err
            assert err.splitlines()[-1].startswith("llm-unlearn: error: no space left on device "), err
            assert expected in err.splitlines()[-1], err
        assert not list(run.rglob("*.partial")) and not list(run.rglob(".*.tmp"))  # nothing half-written kept
    assert main(argv) == 0
    assert _comparable(run) == _comparable(tmp_path / "clean")


def _gstr(text: bytes, claimed: int | None = None) -> bytes:
    """A GGUF string: its uint64 length (or a `claimed` one), then its bytes."""
    return struct.pack("<Q", len(text) if claimed is None else claimed) + text


def _gguf(
    entries: list[bytes] | None = None,
    shape: tuple[int, ...] = (4,),
    offset: int = 0,
    counts: tuple[int, int] | None = None,
    magic: bytes = b"GGUF",
) -> bytes:
    """A GGUF file by hand (ggml/src/gguf.cpp's layout): magic, version 3, tensor and metadata
    counts, the metadata (key, uint32 type, value), one float32 tensor's info (name, dimensions,
    shape, type, offset), padding to 32 bytes, its data."""
    entries = (
        entries
        if entries is not None
        else [_gstr(b"general.architecture") + struct.pack("<I", 8) + _gstr(b"llama")]
    )
    tensors, kvs = counts or (1, len(entries))
    info = _gstr(b"w") + struct.pack(f"<I{len(shape)}QIQ", len(shape), *shape, 0, offset)
    head = magic + struct.pack("<IQQ", 3, tensors, kvs) + b"".join(entries) + info
    return head + b"\0" * (-len(head) % 32) + b"\0" * 16


TERABYTE = 1 << 40
#: (id, the file's bytes, expected): every length and count below lies about a terabyte or more
GGUF_CASES: list[tuple[str, bytes, str]] = [
    ("gguf-tensor-count", _gguf(counts=(1 << 62, 1)), "4611686018427387904 tensors cannot fit"),
    ("gguf-metadata-count", _gguf(counts=(1, 1 << 62)), "4611686018427387904 metadata entries cannot fit"),
    ("gguf-huge-key", _gguf([_gstr(b"general.name", TERABYTE)]), "a metadata key (1099511627776 bytes at byte 32) runs past the end"),
    ("gguf-huge-string", _gguf([_gstr(b"general.name") + struct.pack("<I", 8) + _gstr(b"x", TERABYTE)]), "general.name (1099511627776 bytes"),
    ("gguf-string-array", _gguf([_gstr(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, TERABYTE)]), "1099511627776 strings of tokenizer.ggml.tokens cannot fit"),
    ("gguf-number-array", _gguf([_gstr(b"tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, TERABYTE)]), "tokenizer.ggml.scores (4398046511104 bytes"),
    ("gguf-nested-array", _gguf([_gstr(b"a") + struct.pack("<IIQ", 9, 9, 1)]), "a: an array of value type 9"),
    ("gguf-value-type", _gguf([_gstr(b"a") + struct.pack("<I", 99)]), "a: unknown value type 99"),
    ("gguf-offset", _gguf(offset=TERABYTE), "tensor w: 16 bytes at 1099511627776 run past the end"),
    ("gguf-shape", _gguf(shape=(1 << 31, 1 << 31)), "tensor w: 18446744073709551616 bytes at 0 run past the end"),
    ("gguf-dimensions", _gguf(shape=(1,) * 9), "tensor w: 9 dimensions"),
    ("gguf-magic", _gguf(magic=b"GGML"), "magic b'GGML' version 3, not GGUF version 2 or 3"),
    ("gguf-empty", b"", "0 bytes, less than a GGUF header"),
]  # fmt: skip


def _safetensors(header: dict[str, Any]) -> bytes:
    """A safetensors file by hand: an 8-byte little-endian header length, the JSON header, 16 bytes of data."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"\0" * 16


#: (id, model.safetensors bytes, expected)
SAFETENSORS_CASES: list[tuple[str, bytes, str]] = [
    ("safetensors-header-length", struct.pack("<Q", TERABYTE) + b"{}", "header too large"),
    ("safetensors-truncated", struct.pack("<Q", 90_000_000) + b'{"__metadata__": {"x": "', "invalid header length"),
    ("safetensors-offsets", _safetensors({"w": {"dtype": "F32", "shape": [TERABYTE], "data_offsets": [0, 4 * TERABYTE]}}), "incomplete metadata"),
    ("safetensors-shape", _safetensors({"w": {"dtype": "F32", "shape": [TERABYTE, TERABYTE], "data_offsets": [0, 16]}}), "overflow computing buffer size"),
    ("safetensors-empty", b"", "is not a readable safetensors file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "content", "expected"),
    GGUF_CASES + SAFETENSORS_CASES,
    ids=[c[0] for c in GGUF_CASES + SAFETENSORS_CASES],
)
def test_a_crafted_weights_file_is_one_line_and_allocates_nothing(
    tmp_path, shared, capsys, case, content, expected
):
    if case.startswith("gguf"):
        pytest.importorskip("gguf")
        target = tmp_path / "model.gguf"
        target.write_bytes(content)
    else:
        target = tmp_path / "target"
        shutil.copytree(shared["target"], target)
        (target / "model.safetensors").write_bytes(content)
    recipe = base_recipe(shared, tmp_path / "run")
    recipe["model"]["target"] = str(target)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    before, peak = workspace_files(tmp_path), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    one_line_error(capsys, ["run", str(tmp_path / "recipe.yaml")], expected)
    assert workspace_files(tmp_path) == before
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown_kib < 64 * 1024, grown_kib  # what the file claims (a terabyte) was never allocated


def test_a_truncated_gguf_file_is_one_line(tmp_path, shared, capsys) -> None:
    whole = tmp_path / "whole.gguf"
    write_tiny_gguf(whole)
    for keep in (0.5, 0.99):
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * keep)])
        recipe = base_recipe(shared, tmp_path / "run")
        recipe["model"]["target"] = str(cut)
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        one_line_error(capsys, ["run", str(tmp_path / "recipe.yaml")], "run past the end")
    check_gguf_header(whole)  # whole files are not refused: gguf's own, and the one the cases above alter
    (tmp_path / "honest.gguf").write_bytes(_gguf())
    check_gguf_header(tmp_path / "honest.gguf")


def test_a_checkpoint_that_needs_its_own_code_is_refused_without_running_it(tmp_path, shared, capsys):
    remote = tmp_path / "remote"
    shutil.copytree(shared["target"], remote)
    marker = tmp_path / "code-ran"
    (remote / "modeling_secret.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((remote / "config.json").read_text())
    config |= {
        "model_type": "secret_arch",
        "auto_map": {"AutoModelForCausalLM": "modeling_secret.SecretForCausalLM"},
    }
    (remote / "config.json").write_text(json.dumps(config))
    recipe = base_recipe(shared, tmp_path / "run")
    recipe["model"]["target"] = str(remote)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    before = workspace_files(tmp_path)
    expected = "needs its own Python code to load (config.json auto_map, model_type 'secret_arch' unknown"
    one_line_error(capsys, ["run", str(tmp_path / "recipe.yaml")], f"model.target: {remote} {expected}")
    evaluate = [
        "evaluate",
        "--model",
        str(remote),
        "--data",
        str(shared["muse"]),
        "--out",
        str(tmp_path / "o.json"),
    ]
    one_line_error(
        capsys, evaluate, "if you trust that code, pass --trust-remote-code (model.trust_remote_code: true)"
    )
    assert workspace_files(tmp_path) == before and not marker.exists()
    # trusted, but its auto_map has no configuration class; then code that fails when it runs
    one_line_error(capsys, [*evaluate, "--trust-remote-code"], "config.json auto_map names no AutoConfig")
    broken = remote_code_checkpoint(shared["target"], tmp_path / "broken", "broken_arch", marker)
    (broken / "configuration_broken_arch.py").write_text("raise RuntimeError('no GPU here')\n")
    evaluate[2] = str(broken)
    expected = f"--model: the code of {broken} (trust_remote_code) failed: RuntimeError: no GPU here"
    one_line_error(capsys, [*evaluate, "--trust-remote-code"], expected)
    assert not (tmp_path / "o.json").exists()
    (remote / "config.json").write_text('{"model_type": "llama",')  # torn
    one_line_error(capsys, ["run", str(tmp_path / "recipe.yaml")], "config.json is not valid JSON (Expecting")


def test_a_checkpoint_with_its_own_code_runs_only_when_trusted_and_the_certificate_says_so(
    tmp_path, shared, capsys
) -> None:
    marker = tmp_path / "code-ran"
    remote = remote_code_checkpoint(shared["target"], tmp_path / "remote", "trusted_arch", marker)
    data = ["--data", str(shared["muse"]), "--metrics", "verbmem"]
    audit = ["audit", "--target", str(remote), "--model", f"same={remote}", *data]
    audit += [
        "--quantize",
        "rtn-w4-g32",
        "--relearn",
        "none",
        "--out",
        str(tmp_path / "run"),
        "--fail-above",
        "50",
    ]
    one_line_error(capsys, audit, "pass --trust-remote-code (model.trust_remote_code: true)")
    assert not marker.exists() and not (tmp_path / "run").exists()
    assert main([*audit, "--trust-remote-code"]) in (0, 1)  # the gate's answer; the run completed
    certificate = json.loads((tmp_path / "run" / "certificate.json").read_text())
    assert marker.exists() and certificate["trust_remote_code"] is True
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["model"]["trust_remote_code"]
    # the same weights under Llama's own classes: the same numbers (its code is Llama's)
    own, plain = tmp_path / "own.json", tmp_path / "plain.json"
    assert main(["evaluate", "--model", str(remote), *data, "--out", str(own), "--trust-remote-code"]) == 0
    assert main(["evaluate", "--model", str(shared["target"]), *data, "--out", str(plain)]) == 0
    assert json.loads(own.read_text()) == json.loads(plain.read_text())


def test_diagnose_runs_a_checkpoints_own_code_only_when_trusted(tmp_path, shared, capsys) -> None:
    """`diagnose` resolves its models as `evaluate` does: refused in one line naming the flag, never
    transformers' stdin prompt; with the flag, the code runs and the diagnosis is Llama's own."""
    marker = tmp_path / "code-ran"
    remote = remote_code_checkpoint(shared["target"], tmp_path / "remote", "diagnosed_arch", marker)
    quantizer, needs = ["--quantizer", "rtn-w8"], f"{remote} needs its own Python code to load"
    one_line_error(
        capsys, ["diagnose", str(shared["target"]), str(remote), *quantizer], f"UNLEARNED: {needs}"
    )
    diagnose = ["diagnose", str(remote), str(remote), *quantizer]
    one_line_error(capsys, diagnose, f"TARGET: {needs}")
    one_line_error(capsys, diagnose, "if you trust that code, pass --trust-remote-code")
    assert not marker.exists()
    own, plain = tmp_path / "own.json", tmp_path / "plain.json"
    assert main([*diagnose, "--trust-remote-code", "--out", str(own)]) == 0
    assert marker.exists()
    target = str(shared["target"])
    assert main(["diagnose", target, target, *quantizer, "--out", str(plain)]) == 0
    assert json.loads(own.read_text()) == json.loads(plain.read_text())  # the same weights: identical


def test_diagnose_reads_a_pickled_checkpoint_only_when_allowed(tmp_path, shared, monkeypatch) -> None:
    """With --allow-pickle, diagnose reads the cached safetensors copy, as the audit does: the same
    weights as the target (the same seed), so the same diagnosis as the target against itself."""
    monkeypatch.setenv("LLM_UNLEARN_CACHE", str(tmp_path / "cache"))
    target, pickled = str(shared["target"]), str(shared["pickled"])
    converted, plain = tmp_path / "converted.json", tmp_path / "plain.json"
    diagnose = ["diagnose", target, pickled, "--quantizer", "rtn-w8", "--out", str(converted)]
    assert main([*diagnose, "--allow-pickle"]) == 0
    assert main(["diagnose", target, target, "--quantizer", "rtn-w8", "--out", str(plain)]) == 0
    assert json.loads(converted.read_text()) == json.loads(plain.read_text())


def test_a_crafted_gguf_file_from_the_hub_is_checked_before_it_is_parsed(
    tmp_path, shared, capsys, monkeypatch
) -> None:
    pytest.importorskip("gguf")
    snapshot = hub_snapshot(monkeypatch, tmp_path / "hub", "lab/released")
    (snapshot / "model.gguf").write_bytes(_gguf(offset=TERABYTE))
    parsed = []
    monkeypatch.setattr("llm_unlearn.models.AutoModelForCausalLM.from_pretrained", parsed.append)
    recipe = base_recipe(shared, tmp_path / "run")
    for model in (
        {"target": "lab/released/model.gguf"},
        {"target": "lab/released", "gguf_file": "model.gguf"},
    ):
        recipe["model"] = model
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        one_line_error(
            capsys, ["run", str(tmp_path / "recipe.yaml")], "tensor w: 16 bytes at 1099511627776 run past"
        )
    assert parsed == [] and not (tmp_path / "run").exists()


def _interrupt(after: int) -> Callable[..., Any]:
    """A stand-in that lets `after` calls through to the real function, then is Ctrl-C."""
    calls = []

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) > after:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        return call

    return wrap


def test_ctrl_c_is_one_line_releases_the_folder_and_the_run_resumes_to_identical_results(
    tmp_path, shared, capsys, monkeypatch
) -> None:
    recipe = base_recipe(shared, tmp_path / "clean")
    (tmp_path / "clean.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["run", str(tmp_path / "clean.yaml")]) == 0  # undisturbed
    recipe["output"]["dir"] = str(tmp_path / "run")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    argv, run = ["run", str(tmp_path / "recipe.yaml")], tmp_path / "run"
    faults = [  # Ctrl-C while the unlearned checkpoint is saved, then after the audit's second cell
        (modeling_utils, "safe_save_file", _interrupt(0)),
        (audit_run, "evaluate", _interrupt(2)),
    ]
    for module, name, wrap in faults:
        with monkeypatch.context() as patched:
            patched.setattr(module, name, wrap(getattr(module, name)))
            capsys.readouterr()
            assert main(argv) == 130
            err = capsys.readouterr().err
            assert "Traceback" not in err, err
            assert (
                err.splitlines()[-1]
                == f"llm-unlearn: interrupted: re-run the same command to resume from {run}"
            )
        lock = os.open(run / ".lock", os.O_RDWR)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no BlockingIOError
        os.close(lock)
        assert not list(run.rglob("*.partial")) and not list(run.rglob(".*.tmp"))
    assert len(_comparable(run)) == 2  # the cells before the interruption were kept
    assert main(argv) == 0
    assert _comparable(run) == _comparable(tmp_path / "clean")
    with monkeypatch.context() as patched:  # a verb without a run folder: the same one line
        patched.setattr("llm_unlearn.metrics.evaluate", _interrupt(0)(None))
        out = ["--out", str(tmp_path / "o.json")]
        evaluate = ["evaluate", "--model", str(shared["target"]), "--data", str(shared["muse"]), *out]
        capsys.readouterr()
        assert main(evaluate) == 130 and not (tmp_path / "o.json").exists()
        err = capsys.readouterr().err
        assert err == "llm-unlearn: interrupted: re-run the same command to start again\n", err
