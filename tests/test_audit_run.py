"""`llm-unlearn audit`: checkpoints unlearned elsewhere (a plain HF script, a PEFT adapter, a Hub
folder at a revision, a bf16 sharded checkpoint with tied embeddings, a GGUF target) audited against
their target, with the same cells as `evaluate` and as `run`; mismatched models refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import demo_bench_subset, tiny_llama
from helpers import write_tiny_gguf
from peft import LoraConfig, get_peft_model

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.cli import main
from llm_unlearn.models import grid_align, load_model, save_checkpoint
from llm_unlearn.runfolder import RunFolder

METRICS = "verbmem,knowmem_forget,privleak"
KEEP = {"raw": 4, "verbmem": 2, "knowmem": 2, "privleak": 3}
REVISION = "89abcdef0123456789abcdef0123456789abcdef"

#: an unlearning script that knows nothing of llm_unlearn: three steps of gradient ascent, saved
#: with save_pretrained, optionally in bf16 and in shards
PLAIN_SCRIPT = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
source, dest, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
tokenizer = AutoTokenizer.from_pretrained(source)
model = AutoModelForCausalLM.from_pretrained(source)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
batch = tokenizer(["Elena Marsh was born in Port Avery in 1962."], return_tensors="pt")
for _ in range(3):
    loss = -model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
model.to(getattr(torch, dtype)).save_pretrained(dest, max_shard_size="40KB" if dtype != "float32" else "5GB")
tokenizer.save_pretrained(dest)
assert not any(name.startswith("llm_unlearn") for name in sys.modules)
"""


#: the issue's script: gradient ascent, Adam, 10 steps at a small lr on the 8 forget texts
GA_SCRIPT = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
source, dest, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(source)
model = AutoModelForCausalLM.from_pretrained(source)
batch = tokenizer(texts, return_tensors="pt", padding=True)
labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
optimizer = torch.optim.Adam(model.parameters(), lr=2e-5)
for _ in range(10):
    (-model(**batch, labels=labels).loss).backward()
    optimizer.step()
    optimizer.zero_grad()
model.save_pretrained(dest)
tokenizer.save_pretrained(dest)
"""


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory) -> Path:
    return demo_bench_subset(tmp_path_factory.mktemp("muse"), KEEP)


@pytest.fixture(scope="module")
def target(tmp_path_factory, tok) -> Path:
    return save_checkpoint(tiny_llama(tok), tok, tmp_path_factory.mktemp("t") / "target")


def plain_unlearn(source: Path, dest: Path, dtype: str = "float32") -> Path:
    subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, str(source), str(dest), dtype], check=True)
    return dest


def audit(target: Path | str, models: dict[str, str], muse_dir: Path, out: Path, *extra: str) -> int:
    flags = [x for name, path in models.items() for x in ("--model", f"{name}={path}")]
    return main(
        ["audit", "--target", str(target), *flags, "--data", str(muse_dir), "--quantize", "fp,rtn-w4-g32"]
        + ["--metrics", METRICS, "--out", str(out), *(extra or ("--relearn", "none"))]
    )


def cells(out: Path, model: str) -> dict[tuple[str, str], dict]:
    return {
        (r["quantizer"], r["metric"]): r for r in ResultsFile(RunFolder(out).results) if r["model"] == model
    }


def assert_same_cells(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key]["agg_value"] == pytest.approx(b[key]["agg_value"], abs=1e-9), key
        assert a[key]["value_by_index"] == b[key]["value_by_index"], key


def test_a_plain_hf_checkpoint_is_audited_and_matches_evaluate(tmp_path, target, muse_dir) -> None:
    unlearned = plain_unlearn(target, tmp_path / "plain")
    assert audit(target, {"plain": str(unlearned)}, muse_dir, tmp_path / "run") == 0
    assert (
        main(
            ["evaluate", "--model", str(unlearned), "--data", str(muse_dir), "--metrics", METRICS]
            + ["--out", str(tmp_path / "eval.json")]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    audited = cells(tmp_path / "run", "plain")
    for metric, result in evaluated.items():
        assert audited[("fp", metric)]["agg_value"] == pytest.approx(result["agg_value"], abs=1e-9)
        assert audited[("fp", metric)]["value_by_index"] == result["value_by_index"]
    assert {q for q, _ in audited} == {"fp", "rtn-w4-g32"}
    # the audit knows nothing of how its target was trained: labelled `target`, not `natural`
    assert {r["target"] for r in ResultsFile(RunFolder(tmp_path / "run").results)} == {"target"}
    folder = RunFolder(tmp_path / "run")
    entries = {e["name"]: e for e in json.loads(folder.audited.read_text())}
    assert entries["plain"]["source"] == str(unlearned) and entries["plain"]["checkpoint"] == str(unlearned)
    assert folder.report_md.is_file() and folder.verdict.is_file()
    assert not any(p.name.startswith("plain@") for p in folder.models.iterdir())  # audited in place
    # and pushed like a model the run made: its checkpoint where it is, a card with its verdict
    assert main(["push", str(folder.root), "--repo-id", "org/plain", "--dry-run"]) == 0
    card = folder.hub_card("plain@target").read_text()
    assert "made elsewhere (a local checkpoint)" in card and "## Verdict: does the forgetting survive" in card


def test_run_and_audit_give_identical_cells_for_a_model_run_made(tmp_path, target, muse_dir) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "name": "made",
                "model": {"target": str(target)},
                "data": {"source": str(muse_dir), "max_length": 64},
                "method": {"name": "ga"},
                "train": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3},
                "quantize": ["rtn-w4-g32"],
                "evaluate": METRICS.split(","),
                "output": {"dir": str(tmp_path / "made")},
            }
        )
    )
    assert main(["run", str(recipe)]) == 0
    made = RunFolder(tmp_path / "made").checkpoint("ga@natural")
    assert audit(target, {"ga": str(made)}, muse_dir, tmp_path / "audited") == 0
    assert_same_cells(cells(tmp_path / "made", "ga"), cells(tmp_path / "audited", "ga"))
    assert_same_cells(cells(tmp_path / "made", "target"), cells(tmp_path / "audited", "target"))


def test_an_adapter_is_merged_into_its_base_before_the_audit(tmp_path, target, muse_dir) -> None:
    torch.manual_seed(3)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(load_model(target), config)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    expected = peft_model.merge_and_unload().state_dict()
    # `--target NAME=PATH` labels the target (model.name): its rows, verdict and folders
    assert audit(f"released={target}", {"lora": str(tmp_path / "adapter")}, muse_dir, tmp_path / "run") == 0
    folder = RunFolder(tmp_path / "run")
    assert folder.read_recipe()["model"]["name"] == "released"
    assert {r["target"] for r in ResultsFile(folder.results)} == {"released"}
    assert {c["target"] for c in json.loads(folder.verdict.read_text())["cells"]} == {"released"}
    assert "| lora | released |" in folder.report_md.read_text()
    merged = folder.checkpoint("lora@released")
    assert merged == folder.models / "lora@released"
    for name, value in load_model(merged).state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6, msg=name)
    assert cells(tmp_path / "run", "lora")[("fp", "verbmem")]["checkpoint"] == str(merged)


def test_a_hub_id_at_a_revision_loads_from_a_hub_layout_folder(tmp_path, target, muse_dir) -> None:
    repo = tmp_path / "hub" / "models--lab--unlearned"
    plain_unlearn(target, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(REVISION)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "llm_unlearn", "audit", "--target", str(target)]
    command += ["--model", "hub=lab/unlearned@v1", "--data", str(muse_dir), "--quantize", "fp"]
    command += ["--metrics", "verbmem", "--relearn", "none", "--out", str(tmp_path / "run")]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    snapshot = repo / "snapshots" / REVISION
    assert cells(tmp_path / "run", "hub")[("fp", "verbmem")]["checkpoint"] == str(snapshot)
    command[command.index("hub=lab/unlearned@v1")] = "hub=lab/unlearned@v2"
    command[-1] = str(tmp_path / "run2")
    missing = subprocess.run(command, env=env, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert "models.0.path: cannot fetch lab/unlearned@v2 from the Hub" in missing.stderr


def test_a_bf16_sharded_checkpoint_with_tied_embeddings_is_audited(tmp_path, tok, muse_dir) -> None:
    tied = save_checkpoint(tiny_llama(tok, tie_word_embeddings=True), tok, tmp_path / "tied")
    unlearned = plain_unlearn(tied, tmp_path / "bf16", dtype="bfloat16")
    assert (unlearned / "model.safetensors.index.json").is_file()
    assert len(list(unlearned.glob("model-*.safetensors"))) > 1
    assert audit(tied, {"bf16": str(unlearned)}, muse_dir, tmp_path / "run") == 0
    assert (
        main(
            ["evaluate", "--model", str(unlearned), "--data", str(muse_dir), "--metrics", "verbmem"]
            + ["--out", str(tmp_path / "eval.json")]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "eval.json").read_text())["verbmem"]
    assert cells(tmp_path / "run", "bf16")[("fp", "verbmem")]["value_by_index"] == evaluated["value_by_index"]


def test_a_gguf_target_is_audited(tmp_path, muse_dir, monkeypatch) -> None:
    pytest.importorskip("gguf")
    monkeypatch.setenv("LLM_UNLEARN_CACHE", str(tmp_path / "cache"))
    write_tiny_gguf(tmp_path / "tiny.Q4_1.gguf")
    assert main(["audit", "--target", str(tmp_path / "tiny.Q4_1.gguf"), "--model", "same=" + str(
        tmp_path / "tiny.Q4_1.gguf"), "--data", str(muse_dir), "--quantize", "fp,rtn-w4-g32-min",
        "--metrics", "privleak", "--relearn", "none", "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    found = cells(tmp_path / "run", "same")
    target = cells(tmp_path / "run", "target")
    # the released Q4_1 weights are a fixed point of their grid (up to float32 rounding): quantizing
    # changes no membership score
    quantized = found[("rtn-w4-g32-min", "privleak")]["value_by_index"]
    for i, example in target[("fp", "privleak")]["value_by_index"].items():
        assert quantized[i]["score"] == pytest.approx(example["score"], rel=1e-5), i


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"hidden_size": 64, "intermediate_size": 128},
            "architecture differs from model.target's: hidden_size",
        ),
        ({"num_hidden_layers": 3}, "architecture differs from model.target's: num_hidden_layers 3 vs 2"),
    ],
)
def test_another_architecture_is_refused_in_one_line(
    tmp_path, tok, target, muse_dir, capsys, change, message
):
    other = save_checkpoint(tiny_llama(tok, **change), tok, tmp_path / "other")
    assert audit(target, {"other": str(other)}, muse_dir, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and f"models.0.path: {message}" in err
    assert not (tmp_path / "run").exists()


def test_another_tokenizer_is_refused_in_one_line(tmp_path, tok, target, muse_dir, capsys) -> None:
    other = save_checkpoint(tiny_llama(tok), tok, tmp_path / "other")
    vocab = json.loads((other / "tokenizer.json").read_text())
    vocab["model"]["vocab"]["zz"] = vocab["model"]["vocab"].pop("z")
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    assert audit(target, {"other": str(other)}, muse_dir, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "models.0.path: tokenizer differs from model.target's" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nopath"], "--model 'nopath': expected NAME=PATH"),
        (["--model", "target=x"], "'target' names the reference rows of the audit"),
        (["--model", "a=/nowhere/at/all"], "models.0.path: folder '/nowhere/at/all' not found"),
        (["--relearn", "[1, 2]"], "--relearn '[1, 2]': expected forget, retain or a mapping"),
    ],
)
def test_audit_flag_mistakes_are_one_line(tmp_path, target, muse_dir, capsys, args, message) -> None:
    command = ["audit", "--target", str(target), "--data", str(muse_dir), "--out", str(tmp_path / "run")]
    command += [] if "--relearn" in args else ["--relearn", "none"]
    if "--model" not in args:
        command += ["--model", f"a={target}"]
    assert main(command + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and message in err
    assert not (tmp_path / "run").exists()


def test_small_noisy_forgetting_of_a_grid_aligned_target_fails_the_gate(tmp_path, tok, capsys) -> None:
    # The run, small: a target that memorised the 8 VerbMem forget texts, released on the
    # rtn-w4-g32 grid; a 10-step gradient-ascent script unlearns it. VerbMem falls unevenly over the
    # texts: the move's interval excludes 0 yet is wider than the move, which the old rule left
    # undefined (and the gate open); now the model has forgotten, its recovery is defined, and
    # rtn-w4-g32, whose grid the target sits on, brings enough of it back to fail the gate.
    muse = demo_bench_subset(tmp_path / "muse", {**KEEP, "verbmem": 8})
    texts = [f"{r['prompt']} {r['gt']}" for r in json.loads((muse / "verbmem" / "forget.json").read_text())]
    model = tiny_llama(tok, hidden_size=64, intermediate_size=128)
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    target = grid_align(save_checkpoint(model, tok, tmp_path / "natural"), "rtn-w4-g32", tmp_path / "target")
    script = [sys.executable, "-c", GA_SCRIPT, str(target), str(tmp_path / "ga"), json.dumps(texts)]
    subprocess.run(script, check=True)
    out = tmp_path / "run"
    args = ["audit", "--target", str(target), "--model", f"ga={tmp_path / 'ga'}", "--data", str(muse)]
    args += ["--quantize", "fp,rtn-w4-g32", "--metrics", "verbmem", "--relearn", "none", "--out", str(out)]
    args += ["--fail-above", "25"]
    assert main(args) == 1
    (cell,) = json.loads(RunFolder(out).verdict.read_text())["cells"]
    (lo, hi), moved = cell["forgotten_ci"], cell["forgotten"]
    assert lo > 0 and hi - lo > moved > 1  # clear of 0, wider than itself: the old rule's blank
    assert cell["quantizer"] == "rtn-w4-g32" and cell["recovery"] > 25
    printed = capsys.readouterr().out
    assert "gate (a recovery above 25 % or a model not shown to forget): FAIL, 1 cell\n" in printed
    assert f"  ga@target: {cell['verdict']}: rtn-w4-g32 brings back " in printed
