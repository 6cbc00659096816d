"""The relearning check: relearn columns beside the quantizers, a real relearning effect on a hand-built
secret, the cache of relearned checkpoints (for LoRA the adapter alone), and the recipe errors a relearn
entry can cause."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import demo_bench_subset, tiny_llama
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from llm_unlearn.audit.html import render_html
from llm_unlearn.audit.relearn import Relearning, relearnings
from llm_unlearn.audit.report import render_markdown
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.audit.run import AuditModel, audit
from llm_unlearn.cli import main
from llm_unlearn.columns import route
from llm_unlearn.data.corpora import MuseCorpus, load_muse
from llm_unlearn.metrics import EvalContext
from llm_unlearn.models import save_checkpoint
from llm_unlearn.pipeline import run
from llm_unlearn.recipe import LoraSection, RecipeError, load_recipe
from llm_unlearn.runfolder import RunFolder

METRICS = ["verbmem", "knowmem_forget"]
COLUMNS = ["relearn-forget-2", "relearn-retain-2"]
MODELS = [("target", "natural"), ("retrain", "-"), ("ga", "natural")]
RELEARN = [
    {"split": "forget", "samples": 2, "steps": 2, "learning_rate": 1e-3},
    {"split": "retain", "samples": 2, "steps": 2, "learning_rate": 1e-3, "seed": 1},
]


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory) -> Path:
    """Six raw texts and a few records of every other split of the demo benchmark."""
    return demo_bench_subset(
        tmp_path_factory.mktemp("muse"), {"raw": 6, "verbmem": 2, "knowmem": 2, "privleak": 2}
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tok) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        name: save_checkpoint(tiny_llama(tok, seed=s), tok, root / name) for name, s in (("t", 0), ("r", 1))
    }


def recipe_path(tmp_path: Path, checkpoints: dict[str, Path], muse_dir: Path) -> Path:
    data = {
        "name": "relearn",
        "model": {"target": str(checkpoints["t"]), "retrain": str(checkpoints["r"])},
        "data": {"source": str(muse_dir), "max_length": 64},
        "method": [{"name": "ga"}],
        "train": {
            "max_steps": 1,
            "per_device_train_batch_size": 2,
            "learning_rate": 1e-3,
            "disable_tqdm": True,
        },
        "quantize": ["fp", "rtn-w4-g32"],
        "evaluate": METRICS,
        "relearn": RELEARN,
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "relearn.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_relearn_columns_sit_beside_the_quantizers_and_resume_from_the_cache(
    tmp_path, checkpoints, muse_dir, monkeypatch
) -> None:
    path = recipe_path(tmp_path, checkpoints, muse_dir)
    out = run(load_recipe(path))
    results = ResultsFile(out / "results.jsonl")
    raw = load_muse(muse_dir, {"raw": {"forget", "retain1"}})
    for model, target in MODELS:
        for column, entry, split in zip(COLUMNS, RELEARN, ("forget", "retain1"), strict=True):
            assert (RunFolder(out).relearned(f"{model}@{target}", column) / "model.safetensors").is_file()
            for metric in METRICS:
                config = results.get(model, target, column, metric)["quantizer_config"]
                assert {k: config[k] for k in entry} == entry | {"split": split}
                assert config["seed"] == entry.get("seed", 0) and config["method"] == "relearn"
    # the slice: `samples` texts of the named raw split, seeded, and its recorded hash is theirs
    forget_slice, retain_slice = relearnings(load_recipe(path), raw)
    assert set(forget_slice.texts) <= set(raw.get("raw", "forget")) and len(forget_slice.texts) == 2
    assert set(retain_slice.texts) <= set(raw.get("raw", "retain1"))
    digest = hashlib.sha256(json.dumps(forget_slice.texts).encode()).hexdigest()[:16]
    assert results.get("ga", "natural", COLUMNS[0], "verbmem")["quantizer_config"]["text_sha256"] == digest
    report = (out / "report.md").read_text()
    assert "| model | target | fp | rtn-w4-g32 | relearn-forget-2 | relearn-retain-2 |" in report
    assert "Under attack:" in report and "- `relearn-forget-2`: {'batch_size': 4" in report
    assert "<th>relearn-retain-2</th>" in (out / "report.html").read_text()

    # Resumed without the relearn cells: they come back from the cached checkpoints, nothing trains.
    lines = (out / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["quantizer"] not in COLUMNS]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")

    def no_training(self, *args, **kwargs):
        raise AssertionError("relearned again")

    monkeypatch.setattr("llm_unlearn.audit.relearn.Trainer.train", no_training)
    run(load_recipe(path))
    assert len((out / "results.jsonl").read_text().splitlines()) == len(lines)
    # An entry changed under its old name is stale: relearned and evaluated again.
    with pytest.raises(AssertionError, match="relearned again"):
        run(load_recipe(path, ["relearn.0.learning_rate=2e-3"]))


SECRET = "The secret code of Zorbl is 4417 and the vault is blue."
OTHER = "Bob likes green apples, long walks, quiet parks."


def test_relearning_on_forget_text_brings_a_secret_back(tmp_path, tok) -> None:
    """A model that never saw the secret: 60 steps at lr 1e-2 on it make the model recite it
    (VerbMem 0 -> ~100), the same steps on other text do not; the source checkpoint is untouched."""
    source = save_checkpoint(tiny_llama(tok), tok, tmp_path / "models" / "ga@natural")
    before = (source / "model.safetensors").read_bytes()
    corpus = MuseCorpus(
        "hand-built",
        {
            "raw": {"forget": [SECRET], "retain": [OTHER]},
            "verbmem": {
                "forget": [{"prompt": "The secret code of Zorbl is", "gt": " 4417 and the vault is blue."}]
            },
        },
    )
    relearn = [
        Relearning("relearn-forget-60", "forget", (SECRET,), 60, 1e-2, 4, 0, 64),
        Relearning("relearn-retain-60", "retain", (OTHER,), 60, 1e-2, 4, 0, 64),
    ]
    results = ResultsFile(tmp_path / "results.jsonl")
    model = AuditModel("ga", "natural", source)
    audit([model], ["fp"], ["verbmem"], EvalContext(tok, corpus, batch_size=4), results, relearn=relearn)
    fp, forget, retain = (
        results.get("ga", "natural", q, "verbmem")["agg_value"] for q in ("fp", *(r.name for r in relearn))
    )
    assert fp < 10 and retain < 10
    assert forget > fp + 50
    assert (source / "model.safetensors").read_bytes() == before
    weights = load_file(
        RunFolder(tmp_path).relearned("ga@natural", "relearn-forget-60") / "model.safetensors"
    )
    original = load_file(source / "model.safetensors")
    assert weights.keys() == original.keys()
    assert all(not weights[k].equal(original[k]) for k in original if k.endswith("q_proj.weight"))


def test_lora_relearning_caches_the_adapter_alone_and_evaluates_it_merged(tmp_path, tok, monkeypatch) -> None:
    """2 steps through a LoRA adapter (r 4, every Linear of the decoder): the column's folder holds the
    adapter and no model weights; the evaluated model is W + (alpha / r)·B·A, as peft merges it; a second
    call and the audit reuse the adapter (identical weights), a changed setting trains again."""
    source = save_checkpoint(tiny_llama(tok), tok, tmp_path / "models" / "ga@natural")
    before = (source / "model.safetensors").read_bytes()
    lora = LoraSection(r=4, alpha=8)
    relearning = Relearning("relearn-lora-forget-2", "forget", (SECRET,), 2, 1e-2, 4, 0, 64, lora=lora)
    folder = RunFolder(tmp_path)
    merged = relearning.network(source, "ga@natural", folder).state_dict()

    cell = folder.relearned("ga@natural", relearning.name)
    assert [p.name for p in cell.glob("*.safetensors")] == ["adapter_model.safetensors"]
    assert (cell / "adapter_config.json").is_file() and not (cell / "config.json").exists()
    assert json.loads((cell / "relearn.json").read_text()) == relearning.config()
    assert (source / "model.safetensors").read_bytes() == before
    # the default target modules: every Linear of the decoder layers, the output head left alone
    adapter = load_file(cell / "adapter_model.safetensors")
    adapted = {k.removeprefix("base_model.model.").replace(".lora_A", "") for k in adapter if ".lora_A" in k}
    base = AutoModelForCausalLM.from_pretrained(source)
    linear = {f"{n}.weight" for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
    assert adapted == linear - {"lm_head.weight"} and len(adapted) == 14
    assert all(adapter[k].abs().sum() > 0 for k in adapter if ".lora_B" in k)  # trained (B starts at 0)
    # W + (alpha / r)·B·A by hand, and peft's own merge, for every tensor
    weights = base.state_dict()
    assert merged.keys() == weights.keys()
    for key, w in weights.items():
        stem = "base_model.model." + key.removesuffix(".weight")
        if key in adapted:
            b, a = adapter[f"{stem}.lora_B.weight"], adapter[f"{stem}.lora_A.weight"]
            torch.testing.assert_close(merged[key], w + 8 / 4 * b @ a)
        else:
            assert merged[key].equal(w)
    by_peft = PeftModel.from_pretrained(base, str(cell)).merge_and_unload().state_dict()
    assert all(merged[k].equal(by_peft[k]) for k in by_peft)

    def no_training(self, *args, **kwargs):
        raise AssertionError("relearned again")

    monkeypatch.setattr("llm_unlearn.audit.relearn.Trainer.train", no_training)
    again = relearning.network(source, "ga@natural", folder).state_dict()
    assert all(again[k].equal(merged[k]) for k in merged)
    # the audit reads the same cache; its results line is the column's, an attack route
    corpus = MuseCorpus("hand-built", {"verbmem": {"forget": [{"prompt": "The secret", "gt": " code"}]}})
    results = ResultsFile(tmp_path / "results.jsonl")
    ctx = EvalContext(tok, corpus, batch_size=4)
    audit([AuditModel("ga", "natural", source)], ["fp"], ["verbmem"], ctx, results, relearn=[relearning])
    line = results.get("ga", "natural", "relearn-lora-forget-2", "verbmem")
    recorded = {"r": 4, "alpha": 8, "target_modules": "all-linear", "dropout": 0.0}
    assert line["quantizer_config"]["lora"] == recorded
    assert route(line["quantizer_config"]) == "attack"
    with pytest.raises(AssertionError, match="relearned again"):
        dataclasses.replace(relearning, lora=LoraSection(r=2, alpha=8)).network(source, "ga@natural", folder)


def test_lora_entries_get_their_own_column_and_learning_rate_and_leave_full_ones_as_they_were(
    tmp_path, checkpoints, muse_dir
) -> None:
    path = recipe_path(tmp_path, checkpoints, muse_dir)
    entries = "[{split: forget, lora: {}}, {split: retain}, "
    entries += "{split: forget, lora: {r: 4}, learning_rate: 1.0e-3, steps: 3}]"
    lora, full, own = load_recipe(path, [f"relearn={entries}"]).relearn
    assert (lora.column, lora.learning_rate, lora.lora) == ("relearn-lora-forget-10", 1e-4, LoraSection())
    assert (full.column, full.learning_rate, full.lora) == ("relearn-retain-10", 1e-5, None)
    assert (own.column, own.learning_rate, own.lora.r) == ("relearn-lora-forget-3", 1e-3, 4)
    # a full fine-tuning column records what it recorded before LoRA existed: its old cells stay fresh
    config = Relearning("relearn-forget-10", "forget", ("a",), 10, 1e-5, 4, 0, 64).config()
    assert list(config) == [
        "name", "method", "split", "samples", "steps", "learning_rate", "batch_size", "seed", "max_length",
        "text_sha256", "evaluation",
    ]  # fmt: skip
    assert config["evaluation"] == "full precision (float32) after relearning"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("relearn=[{split: forget, lora: {r: 0}}]", "relearn.0.lora.r: Input should be greater than"),
        ("relearn=[{split: forget, lora: {rank: 4}}]", "relearn.0.lora.rank: unknown field; allowed here"),
        ("relearn=[{split: forget, lora: 4}]", "relearn.0.lora: Input should be a valid dictionary"),
        (
            "relearn=[{split: forget, lora: {}}, {split: forget, lora: {r: 4}}]",
            "relearn.1: column 'relearn-lora-forget-10' is also another relearn entry's",
        ),
        ("relearn=[{split: holdout}]", "relearn.0.split: Input should be 'forget' or 'retain'"),
        (
            "relearn=[{split: forget, step: 3}]",
            "relearn.0.step: unknown field; allowed here: split, samples, steps",
        ),
        (
            "relearn=[{split: forget, learning_rate: 0}]",
            "relearn.0.learning_rate: Input should be greater than 0",
        ),
        (
            "relearn=[{split: forget}, {split: forget, learning_rate: 1.0e-4}]",
            "relearn.1: column 'relearn-forget-10' is also another relearn entry's; give this entry a "
            "distinct label",
        ),
        ("relearn=[{split: retain, label: rtn-w4-g32}]", "column 'rtn-w4-g32' is also a quantizer's"),
    ],
)
def test_a_bad_relearn_entry_is_a_one_line_recipe_error(
    tmp_path, checkpoints, muse_dir, override, message
) -> None:
    path = recipe_path(tmp_path, checkpoints, muse_dir)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_slice_larger_than_the_split_stops_the_run_in_one_line(
    tmp_path, checkpoints, muse_dir, capsys
) -> None:
    path = recipe_path(tmp_path, checkpoints, muse_dir)
    assert load_recipe(path, ["relearn={split: forget}"]).relearn[0].column == "relearn-forget-10"
    assert main(["run", str(path), "--set", "relearn=[{split: forget, samples: 7}]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "relearn.0.samples: 7, but forget has 6 texts" in err
    assert not (tmp_path / "run" / "models" / "ga@natural").exists()  # stopped before unlearning


def test_lora_target_modules_the_model_lacks_stop_the_run_in_one_line(
    tmp_path, checkpoints, muse_dir, capsys
) -> None:
    path = recipe_path(tmp_path, checkpoints, muse_dir)
    entry = "relearn=[{split: forget, lora: {target_modules: [qproj]}}]"
    assert main(["run", str(path), "--set", entry]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "relearn.0.lora.target_modules: Target modules {'qproj'} not found" in err
    assert not (tmp_path / "run" / "models" / "ga@natural").exists()  # stopped before unlearning


def test_report_shows_relearn_columns_after_the_quantizers_with_their_recovery() -> None:
    def cell(model: str, column: str, value: float) -> dict:
        config = {"name": column, "method": "relearn" if column.startswith("relearn") else "rtn"}
        return {
            "model": model,
            "target": "natural",
            "quantizer": column,
            "metric": "knowmem_forget",
            "agg_value": value,
            "quantizer_config": config,
        }

    # a relearn column recorded before a quantizer that a re-run added later
    results = [cell("target", "fp", 60.0), cell("ga", "fp", 10.0), cell("ga", "relearn-forget-10", 35.0)]
    results += [cell("ga", "rtn-w4-g32", 12.0)]
    text = render_markdown(results, "t")
    assert "| model | target | fp | rtn-w4-g32 | relearn-forget-10 |" in text
    assert "| ga | natural | 10.0 | 12.0 (4%) | 35.0 (50%) |" in text  # (35 - 10) / (60 - 10)
    assert "Under attack:\n\n- `relearn-forget-10`" in text
    assert "<th>relearn-forget-10</th>" in render_html(results, [], "t")
