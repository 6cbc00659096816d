"""`llm-unlearn push`: the model card and the upload plan of a tiny run folder, offline; the Hub is
never reached (HfApi's network methods are patched to fail, or to record what they were given)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_llama
from huggingface_hub import HfApi, ModelCard
from peft import LoraConfig, PeftModel, get_peft_model

from llm_unlearn.audit.cache import quantized
from llm_unlearn.cli import main
from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.errors import UserError
from llm_unlearn.hub import model_card, plan_push
from llm_unlearn.metrics import EvalContext
from llm_unlearn.models import load_model, save_checkpoint
from llm_unlearn.pipeline import unlearn
from llm_unlearn.quant import get_quantizer
from llm_unlearn.recipe import validate_recipe
from llm_unlearn.runfolder import RunFolder

MODEL = "ga_gdr+quail@natural"
CHECKPOINT_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
}
RUN_FILES = {"README.md", "audit/recipe.yaml", "audit/results.jsonl", "audit/method.json"}
FAKE_TOKEN = "hf_FakeTokenThatMustNeverBeShown0123456789"
NETWORK = ("create_repo", "create_branch", "create_commit", "upload_folder", "upload_file", "whoami")
#: metric -> model -> quantizer -> value; ga_gdr+quail brings back half of KnowMem under rtn-w4-g32:
#: (35 - 10) / (60 - 10) = 50 %
VALUES = {
    "knowmem_forget": {
        ("target", "natural"): {"fp": 60.0, "rtn-w4-g32": 59.0},
        ("retrain", "-"): {"fp": 5.0},
        ("ga_gdr+quail", "natural"): {"fp": 10.0, "rtn-w4-g32": 35.0},
    },
    "verbmem": {
        ("target", "natural"): {"fp": 80.0, "rtn-w4-g32": 79.0},
        ("retrain", "-"): {"fp": 20.0},
        ("ga_gdr+quail", "natural"): {"fp": 30.0, "rtn-w4-g32": 30.5},
    },
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tok) -> Path:
    """A run folder as `run` leaves it: recipe, one unlearned checkpoint with its method settings,
    and results.jsonl; built directly, without training."""
    root = tmp_path_factory.mktemp("run")
    recipe = {
        "name": "tiny",
        "model": {"target": "org/base-model", "retrain": None, "grid_align": None, "lora": None},
        "data": {
            "source": "muse-bench/MUSE-News",
            "forget_split": "forget",
            "retain_split": "retain1",
            "max_length": 64,
        },
        "method": [{"name": "ga_gdr", "quail": {"margin": 0.5, "quantizer": "rtn-w4-g32"}}],
        "train": {"learning_rate": 1e-5, "num_train_epochs": 2.0, "seed": 0},
        "quantize": ["fp", "rtn-w4-g32"],
        "evaluate": list(VALUES),
        "output": {"dir": str(root)},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    save_checkpoint(tiny_llama(tok), tok, root / "models" / MODEL)
    terms = {
        "ga": {"weight": 1.0, "params": {}},
        "hinge": {"weight": 1.0, "params": {"margin": 0.5, "distance": "mean_abs"}},
        "gdr": {"weight": 1.0, "params": {}},
    }
    resolved = {
        "method": "ga_gdr",
        "learning_rate": 2e-4,
        "terms": terms,
        "hinge_margin": 0.5,
        "projection": None,
    }
    (root / "models" / f"{MODEL}.method.json").write_text(
        json.dumps({**resolved, "lora": None, "sure": None})
    )
    lines = []
    for metric, rows in VALUES.items():
        for (model, target), cells in rows.items():
            for quantizer, value in cells.items():
                record = {"model": model, "target": target, "quantizer": quantizer, "metric": metric}
                record.update(agg_value=value, quantizer_config={"name": quantizer}, value_by_index={})
                lines.append(json.dumps(record))
    (root / "results.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_card_has_metadata_model_index_and_the_models_audit(run_dir) -> None:
    card = ModelCard(str(model_card(run_dir, MODEL, "my-org/ga-gdr-quail")))  # as the Hub will parse it
    data = card.data
    assert data.base_model == "org/base-model" and data.datasets == ["muse-bench/MUSE-News"]
    assert {"llm-unlearn", "unlearning", "ga_gdr", "quail"} <= set(data.tags)
    entries = {(r.metric_type, r.metric_config): r for r in data.eval_results}
    assert set(entries) == {(m, q) for m in VALUES for q in ("fp", "rtn-w4-g32")}
    assert entries[("knowmem_forget", "rtn-w4-g32")].metric_value == 35.0
    knowmem = entries[("knowmem_forget", "fp")]
    assert (knowmem.dataset_type, knowmem.dataset_config) == ("muse-bench/MUSE-News", "knowmem")
    assert knowmem.dataset_split == "forget_qa,forget_qa_icl"
    assert entries[("verbmem", "fp")].dataset_split == "forget"
    text = card.text
    # target, retrain, then this model at fp and quantized with its recovery ratio
    assert (
        "| KnowMem on forget (ROUGE-L F1 × 100, lower = more forgotten) | 60.0 | 5.0 | 10.0 | 35.0 (50%) |"
        in text
    )
    assert "| 80.0 | 20.0 | 30.0 | 30.5 (1%) |" in text
    # the card opens with this model's verdict rows (no per-example values here: the point decides)
    verdict = "| fails | ga_gdr+quail | natural | rtn-w4-g32 | knowmem_forget | 50% |"
    assert text.index(verdict) < text.index("## Unlearning")
    assert "| holds | ga_gdr+quail | natural | rtn-w4-g32 | verbmem | 1% |" in text
    assert "muse-bench/MUSE-News`, raw split `forget`" in text
    # the learning rate the method ran with (its override), not the recipe's train default
    assert "| `learning_rate` | `0.0002` |" in text and "| `hinge_margin` | `0.5` |" in text
    assert "`ga_gdr`: forget term `ga`, retain term `gdr`" in text


def test_card_reads_the_license_of_a_local_base_model(run_dir, tmp_path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    recipe = yaml.safe_load((copy / "recipe.yaml").read_text())
    recipe["model"]["target"] = str(base)
    (copy / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    data = model_card(copy, MODEL, "my-org/x").data
    assert data.license == "mit"
    assert data.base_model is None  # a local path is no Hub id; the card must not publish it
    assert str(base) not in str(model_card(copy, MODEL, "my-org/x"))


def test_plan_lists_checkpoint_card_and_run_files(run_dir) -> None:
    plan = plan_push(run_dir, "my-org/ga-gdr-quail", private=True)
    assert (plan.model, plan.private) == (MODEL, True)
    [commit] = plan.commits
    assert commit.revision == "main"
    assert sorted(f.path_in_repo for f in commit.files) == sorted(CHECKPOINT_FILES | RUN_FILES)
    sources = {f.path_in_repo: f.local for f in commit.files}
    assert sources["model.safetensors"] == run_dir / "models" / MODEL / "model.safetensors"
    assert sources["audit/method.json"] == run_dir / "models" / f"{MODEL}.method.json"
    assert sources["README.md"] == run_dir / "hub" / MODEL / "README.md"
    sizes = {f.path_in_repo: f.size for f in commit.files}
    assert sizes["model.safetensors"] == sources["model.safetensors"].stat().st_size
    assert plan.notes == ()


def test_quantized_variants_go_to_a_branch_each_when_present(run_dir, tmp_path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    plan = plan_push(copy, "my-org/x", with_quantized=True)
    assert len(plan.commits) == 1 and "quantized variants: none" in plan.notes[0]
    quantizer = get_quantizer("rtn-w4-g32")
    network = quantized(copy / "models" / MODEL, quantizer, copy / "quantized" / MODEL / quantizer.name)
    plan = plan_push(copy, "my-org/x", with_quantized=True)
    assert [c.revision for c in plan.commits] == ["main", "rtn-w4-g32"]
    assert sorted(f.path_in_repo for f in plan.commits[1].files) == sorted(CHECKPOINT_FILES | {"README.md"})
    # the cache holds codes; the branch gets a checkpoint rebuilt from them, loadable as it is
    loadable = copy / "hub" / MODEL / "rtn-w4-g32"
    assert plan.commits[1].files[0].local.parent == loadable
    for key, value in load_model(loadable).state_dict().items():
        assert torch.equal(value, network.state_dict()[key])
    shutil.rmtree(loadable)  # a cell whose source checkpoint is gone cannot be rebuilt: one line
    source = copy / "quantized" / MODEL / "rtn-w4-g32" / "source.json"
    source.write_text(json.dumps({**json.loads(source.read_text()), "checkpoint": str(tmp_path / "gone")}))
    with pytest.raises(UserError, match=r"rtn-w4-g32: made from .*, which is gone; audit that model again"):
        plan_push(copy, "my-org/x", with_quantized=True)


def test_a_run_folder_of_an_older_version_pushes_by_todays_names(run_dir, tmp_path) -> None:
    """Its grid-aligned target labelled `grid` in results and folder names: listed, planned and
    carded as RUN@grid-aligned from its old checkpoint folder; `--model RUN@grid` accepted."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    recipe = yaml.safe_load((old / "recipe.yaml").read_text())
    recipe["model"]["grid_align"] = "rtn-w4-g32"
    recipe["method"][0]["targets"] = ["grid"]
    (old / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    for suffix in ("", ".method.json"):
        (old / "models" / f"{MODEL}{suffix}").rename(old / "models" / f"ga_gdr+quail@grid{suffix}")
    (old / "results.jsonl").write_text((old / "results.jsonl").read_text().replace('"natural"', '"grid"'))
    plan = plan_push(old, "my-org/x", model="ga_gdr+quail@grid")
    assert plan.model == "ga_gdr+quail@grid-aligned"
    assert {f.local.parent for f in plan.commits[0].files if f.path_in_repo == "model.safetensors"} == {
        old / "models" / "ga_gdr+quail@grid"
    }
    assert plan_push(old, "my-org/x").model == plan.model  # the run's only unlearned model
    text = str(plan.card)
    assert "| fails | ga_gdr+quail | grid-aligned | rtn-w4-g32 | knowmem_forget | 50% |" in text
    assert "with its Linear weights on the `rtn-w4-g32` grid" in text


def test_a_demo_runs_card_names_the_demo_model_and_no_hub_base(run_dir, tmp_path) -> None:
    """`demo` and `demo_quick` are the demo's own models, not Hub ids: the card describes them and
    leaves base_model out."""
    named = {"demo": "The llm-unlearn demo model", "demo_quick": "The llm-unlearn quick demo model"}
    for target, name in named.items():
        demo = tmp_path / target
        shutil.copytree(run_dir, demo)
        recipe = yaml.safe_load((demo / "recipe.yaml").read_text())
        recipe["model"]["target"], recipe["data"]["source"] = target, "demo"
        (demo / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        card = ModelCard(str(model_card(demo, MODEL, "my-org/x")))
        assert card.data.base_model is None and name in card.text, target


def test_plan_refuses_what_it_cannot_push(run_dir, tmp_path) -> None:
    with pytest.raises(UserError, match="--repo-id 'no-org': give ORG/NAME"):
        plan_push(run_dir, "no-org")
    with pytest.raises(
        UserError, match=r"--model .npo@grid. is not one of its unlearned models: ga_gdr\+quail"
    ):
        plan_push(run_dir, "my-org/x", model="npo@grid")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "models" / MODEL / "model.safetensors").rename(copy / "models" / MODEL / "pytorch_model.bin")
    with pytest.raises(UserError, match="no .safetensors weights"):
        plan_push(copy, "my-org/x")


@pytest.fixture
def no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was called")

    for name in NETWORK:
        monkeypatch.setattr(HfApi, name, refuse)


def test_dry_run_writes_the_card_and_prints_the_plan_offline(run_dir, tmp_path, capsys, no_network) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["push", str(copy), "--repo-id", "my-org/ga-gdr-quail", "--private", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run, nothing uploaded" in out and "huggingface.co/my-org/ga-gdr-quail (private" in out
    for name in CHECKPOINT_FILES | RUN_FILES:
        assert f"  {name} " in out, name
    card = copy / "hub" / MODEL / "README.md"
    assert ModelCard.load(card).data.base_model == "org/base-model"


def test_no_token_stops_before_touching_anything(run_dir, tmp_path, capsys, monkeypatch, no_network) -> None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("llm_unlearn.hub.get_token", lambda: None)  # a token stored by `hf auth login`
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["push", str(copy), "--repo-id", "my-org/x"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "no Hugging Face token" in err
    assert not (copy / "hub").exists()


def test_push_uploads_with_the_token_and_never_shows_it(run_dir, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    calls = []

    def record(name):
        def call(self, *args, **kwargs):
            repo_id, *rest = args or (None,)
            calls.append((name, self.token, repo_id, tuple(rest), kwargs))

        return call

    for name in NETWORK:
        monkeypatch.setattr(HfApi, name, record(name))
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["push", str(copy), "--repo-id", "my-org/x", "--private"]) == 0
    assert [(c[0], c[1], c[2]) for c in calls] == [
        ("whoami", FAKE_TOKEN, None),  # the Hub reached (and the token taken) before anything is written
        ("create_repo", FAKE_TOKEN, "my-org/x"),
        ("create_commit", FAKE_TOKEN, "my-org/x"),
    ]
    assert calls[1][4] == {"private": True, "exist_ok": True}
    operations = calls[2][3][0]
    assert sorted(op.path_in_repo for op in operations) == sorted(CHECKPOINT_FILES | RUN_FILES)
    assert calls[2][4]["revision"] == "main"
    out, err = capsys.readouterr()
    assert FAKE_TOKEN not in out + err
    for path in copy.rglob("*"):
        assert not path.is_file() or FAKE_TOKEN.encode() not in path.read_bytes(), path


def lora_run(run_dir: Path, tmp_path: Path, tok) -> Path:
    """A copy of the run folder as a LoRA run left it: model.lora in the recipe and peft's adapter
    folder (with the README peft writes) beside the merged checkpoint."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    recipe = yaml.safe_load((copy / "recipe.yaml").read_text())
    recipe["model"]["lora"] = {"r": 4, "alpha": 8, "target_modules": "all-linear", "dropout": 0.0}
    (copy / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    adapter = get_peft_model(tiny_llama(tok), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    adapter.save_pretrained(copy / "models" / f"{MODEL}.adapter")
    return copy


def test_with_adapter_pushes_the_lora_adapter_under_adapter(
    run_dir, tmp_path, tok, capsys, no_network
) -> None:
    copy = lora_run(run_dir, tmp_path, tok)
    assert (copy / "models" / f"{MODEL}.adapter" / "README.md").is_file()
    plan = plan_push(copy, "my-org/x", with_adapter=True)
    [commit] = plan.commits
    adapter = {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"}  # not peft's README
    assert sorted(f.path_in_repo for f in commit.files) == sorted(CHECKPOINT_FILES | RUN_FILES | adapter)
    sources = {f.path_in_repo: f.local for f in commit.files}
    assert (
        sources["adapter/adapter_config.json"] == copy / "models" / f"{MODEL}.adapter" / "adapter_config.json"
    )
    assert 'PeftModel.from_pretrained(base_model, "my-org/x", subfolder="adapter")' in str(plan.card)
    assert "subfolder" not in str(plan_push(copy, "my-org/x").card)  # without the option: no adapter
    assert main(["push", str(copy), "--repo-id", "my-org/x", "--with-adapter", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in adapter)


def test_with_adapter_without_an_adapter_is_one_line(run_dir, tmp_path, tok, capsys, no_network) -> None:
    assert main(["push", str(run_dir), "--repo-id", "my-org/x", "--with-adapter", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"--with-adapter: {MODEL} is not a LoRA run (its recipe has no model.lora)" in err
    copy = lora_run(run_dir, tmp_path, tok)
    shutil.rmtree(copy / "models" / f"{MODEL}.adapter")
    with pytest.raises(UserError, match=r"--with-adapter: no adapter in .*; delete .* and re-run to save it"):
        plan_push(copy, "my-org/x", with_adapter=True)


def test_a_lora_run_saves_the_adapter_that_rebuilds_its_merged_model(tmp_path, tok) -> None:
    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "target")
    recipe = validate_recipe(
        {
            "name": "lora",
            "model": {"target": str(target), "lora": {"r": 4, "alpha": 8}},
            "data": {"max_length": 32},
            "method": [{"name": "ga"}],
            "train": {
                "max_steps": 2,
                "per_device_train_batch_size": 2,
                "learning_rate": 1e-2,
                "disable_tqdm": True,
            },
            "output": {"dir": str(tmp_path / "run")},
        }
    )
    corpus = MuseCorpus("hand-built", {"raw": {"forget": ["Zorbl's code is 4417."] * 4}})
    dest = tmp_path / "run" / "models" / "ga@natural"
    unlearn(recipe, recipe.method[0], target, dest, corpus, tok, EvalContext(tok, corpus))
    rebuilt = PeftModel.from_pretrained(
        load_model(target), RunFolder(dest.parents[1]).adapter(dest.name)
    ).merge_and_unload()
    merged, base = load_model(dest).state_dict(), load_model(target).state_dict()
    assert merged.keys() == rebuilt.state_dict().keys()
    assert all(torch.allclose(rebuilt.state_dict()[k], w, atol=1e-6) for k, w in merged.items())
    assert any(not base[k].equal(w) for k, w in merged.items())  # the adapter changed the model


def test_card_states_the_terms_as_trained_in_method_json(run_dir, tmp_path) -> None:
    """The hyper-parameters come from .method.json, not re-derived from the recipe: a value the run
    resolved (here a changed margin and weight) is what the card shows."""
    run_dir = Path(shutil.copytree(run_dir, tmp_path / "run"))  # the module's run folder stays as made
    path = run_dir / "models" / f"{MODEL}.method.json"
    resolved = json.loads(path.read_text())
    resolved["terms"]["hinge"] = {"weight": 2.5, "params": {"margin": 0.75, "distance": "l2"}}
    resolved["terms"]["gdr"]["weight"] = 0.3
    path.write_text(json.dumps(resolved))
    text = str(model_card(run_dir, MODEL, "my-org/ga-gdr-quail"))
    for row in ("| `hinge_weight` | `2.5` |", "| `hinge_margin` | `0.75` |", "| `hinge_distance` | `l2` |"):
        assert row in text
    assert "| `retain_weight` | `0.3` |" in text and "logit hinge, margin 0.75" in text
    del resolved["terms"]
    path.write_text(json.dumps(resolved))
    with pytest.raises(UserError, match="predates recorded term settings; delete that checkpoint"):
        model_card(run_dir, MODEL, "my-org/ga-gdr-quail")


def test_an_offline_push_with_a_token_is_one_line(run_dir, tmp_path, capsys, monkeypatch) -> None:
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)

    def offline(self, *args, **kwargs):
        raise OfflineModeIsEnabled(
            "Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled."
        )

    monkeypatch.setattr(HfApi, "whoami", offline)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = sorted(copy.rglob("*"))
    assert main(["push", str(copy), "--repo-id", "my-org/x"]) == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert err.splitlines() == [err] and "push to my-org/x: OfflineModeIsEnabled: Cannot reach" in err
    assert FAKE_TOKEN not in err
    assert out == "" and sorted(copy.rglob("*")) == before  # no plan printed, no card written


def test_an_interrupted_upload_is_one_line_and_the_same_push_finishes_it(
    run_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    quantizer = get_quantizer("rtn-w4-g32")
    quantized(copy / "models" / MODEL, quantizer, copy / "quantized" / MODEL / quantizer.name)
    hub: dict[str, set[str]] = {}  # branch -> files the fake Hub holds
    calls = []

    def create_commit(self, repo_id, operations, commit_message, revision):
        calls.append(revision)
        if len(calls) == 2:  # the connection drops while the quantized branch uploads
            raise ConnectionError(
                "('Connection aborted.', RemoteDisconnected('Remote end closed connection'))"
            )
        hub.setdefault(revision, set()).update(op.path_in_repo for op in operations)

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    for name in ("whoami", "create_repo", "create_branch"):
        monkeypatch.setattr(HfApi, name, lambda self, *args, **kwargs: None)
    argv = ["push", str(copy), "--repo-id", "my-org/x", "--with-quantized"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err], err
    assert err == (
        "llm-unlearn: error: push to my-org/x: ConnectionError: ('Connection aborted.', RemoteDisconnected("
        "'Remote end closed connection')); re-run the same push to finish it"
    )
    assert list(hub) == ["main"]
    assert main(argv) == 0
    assert calls == ["main", "rtn-w4-g32", "main", "rtn-w4-g32"]
    assert hub == {"main": CHECKPOINT_FILES | RUN_FILES, "rtn-w4-g32": CHECKPOINT_FILES | {"README.md"}}
