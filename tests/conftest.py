"""Shared fixtures: a character-level tokenizer and tiny Llama models, all built offline.

Where a module's tests live: one test file per module of `llm_unlearn/`, flat in tests/.
`llm_unlearn/<module>.py` -> `tests/test_<module>.py`; a package's module
`llm_unlearn/<package>/<module>.py` -> `tests/test_<package>_<module>.py` (audit/report.py ->
test_audit_report.py, terms/npo.py -> test_terms_npo.py); a package's `__init__.py` (a registry)
-> `tests/test_<package>.py`. Tests that span stages keep a file named for their entry point:
test_pipeline.py, test_demo.py, test_readme.py, test_errors.py, test_distributed.py, test_cli.py.
Shared builders live here and in helpers.py; no test file imports another test file."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llm_unlearn import filehash
from llm_unlearn.data.demo import BENCH_DIR
from llm_unlearn.models import save_checkpoint


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # tiny matmuls on a shared 2-core box: a second thread only waits on the first (100x slower here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level, Llama-like (BOS prepended, no EOS appended), fully offline."""
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *sorted(set(string.printable))])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    t.decoder = decoders.Fuse()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_llama(tok: PreTrainedTokenizerFast, seed: int = 0, **overrides: object) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(LlamaConfig(**{**settings, **overrides}))


def demo_bench_subset(root: Path, keep: dict[str, int]) -> Path:
    """The first `keep[config]` records of every split of the shipped demo benchmark, as a MUSE folder."""
    for path in BENCH_DIR.glob("*/*.json"):
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        records = json.loads(path.read_text())[: keep[path.parent.name]]
        (root / path.parent.name / path.name).write_text(json.dumps(records))
    return root


@pytest.fixture(scope="session")
def tok() -> PreTrainedTokenizerFast:
    return char_tokenizer()


@pytest.fixture(scope="module")
def llama(tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return tiny_llama(tok).eval()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # CI's backend job sets this: there a test skipped for a missing backend is a failure.
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("LLM_UNLEARN_REQUIRE_BACKENDS") == "1":
        report.outcome = "failed"


def results_in_both_modes(recipe: dict, tmp_path: Path) -> dict[str, dict[tuple[str, str], dict]]:
    """`recipe` run with `evaluate_with: simulated` and `kernels`, each into its own folder under
    `tmp_path`: each run's results records by (model, quantizer)."""
    from llm_unlearn.audit.results import ResultsFile
    from llm_unlearn.pipeline import run
    from llm_unlearn.recipe import validate_recipe

    found = {}
    for mode in ("simulated", "kernels"):
        out = tmp_path / mode
        run(validate_recipe({**recipe, "evaluate_with": mode, "output": {"dir": str(out)}}))
        found[mode] = {(r["model"], r["quantizer"]): r for r in ResultsFile(out / "results.jsonl")}
    return found


def old_run_folder(root: Path, recipe: dict) -> Path:
    """A run folder as a version before the `grid-aligned` and `target` labels left it, written by
    hand: `recipe` (validated) stored without model.name and with `targets: [grid]`; results and
    audited.json lines labelled `grid` (the grid-aligned copy), `natural` (the user's target, also
    of an audit) and `-`; each audited model's checkpoint under models/RUN@grid or RUN@natural with
    its training log and method file, and its cache folders under quantized/ and relearned/."""
    import yaml

    from llm_unlearn.recipe import validate_recipe

    stored = validate_recipe(recipe).model_dump(mode="json")
    del stored["model"]["name"]
    targets = ["natural", "grid"] if stored["model"]["grid_align"] else ["natural"]
    for method in stored["method"]:
        if method["targets"]:
            method["targets"] = [{"grid-aligned": "grid"}.get(t, t) for t in method["targets"]]
    root.mkdir(parents=True)
    (root / "recipe.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    models = [("target", t) for t in targets] + [("retrain", "-")]
    models += [(m["label"] or m["name"], t) for m in stored["method"] for t in m["targets"] or targets]
    models += [(m["name"], "natural") for m in stored["models"]]
    lines, audited = [], []
    for name, target in models:
        folder = root / "models" / f"{name}@{target}"
        if name not in ("target", "retrain"):
            folder.mkdir(parents=True)
            (root / "models" / f"{name}@{target}.log.json").write_text("[]")
            (root / "models" / f"{name}@{target}.method.json").write_text("{}")
            (root / "quantized" / f"{name}@{target}" / "rtn-w4-g32").mkdir(parents=True)
            (root / "relearned" / f"{name}@{target}" / "relearn-forget-10").mkdir(parents=True)
        audited.append({"name": name, "target": target, "checkpoint": str(folder), "source": ""})
        record = {"model": name, "target": target, "quantizer": "fp", "metric": "verbmem", "agg_value": 1.0}
        lines.append(json.dumps(record))
    (root / "results.jsonl").write_text("\n".join(lines) + "\n")
    (root / "audited.json").write_text(json.dumps(audited))
    return root


# --- quantizers: a one-block Llama saved (test_quant_calibrated.py, test_quant_bnb.py) ---------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tok):
    """A one-block Llama whose Linear inputs (128, 256) divide into groups of 32, 64 and 128."""
    model = tiny_llama(tok, hidden_size=128, intermediate_size=256, num_hidden_layers=1)
    return save_checkpoint(model, tok, tmp_path_factory.mktemp("q") / "tiny")


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """The files `sha256_file` read, in order; the memo trusts files however recently written."""
    seen: list[Path] = []
    real = filehash.sha256_file

    def spy(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(filehash, "sha256_file", spy)
    monkeypatch.setattr(filehash, "RACY_NS", 0)
    return seen
