"""`llm-unlearn push`: one unlearned model of a run folder to the Hugging Face Hub, with a model card
that carries its audit.

The plan is built from the run folder alone (no network): the checkpoint as the run saved it
(safetensors and tokenizer; a LoRA run saved the merged model), a model card (`README.md`: method,
forget set, base model, hyper-parameters, the model's audit table, `model-index` entries for every
metric under every quantizer) and, under `audit/`, the recipe, `results.jsonl` and the resolved
method settings. Quantized variants, when the audit cached them under
`quantized/<model>/<quantizer>/` (as codes: `audit/cache.py`), are first rebuilt once into loadable
checkpoints under `hub/<model>/<quantizer>/` and go to a branch of the same repo named after the
quantizer (with llama.cpp's GGUF file where the quantizer made one).
A LoRA run's adapter (`models/<model>.adapter/`) goes, on request, under `adapter/` beside the
merged model: not at the root, where transformers would load the repo as an adapter rather than as
the merged model, and not on a branch, which here means a quantized variant of the same weights;
`PeftModel.from_pretrained(base, repo_id, subfolder="adapter")` loads it.

The token comes from the standard Hub login or `HF_TOKEN` (`huggingface_hub.get_token()`) and is
only ever handed to `HfApi`: never printed, logged or written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    get_token,
    try_to_load_from_cache,
)

from llm_unlearn.audit.cache import CONFIG, materialize
from llm_unlearn.audit.report import AuditCells, metric_title, verdict_markdown, verdict_settings
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.data.corpora import DEMO, DEMO_MODELS, DEMO_QUICK, is_hub_id
from llm_unlearn.errors import UserError
from llm_unlearn.locations import check_repo_id
from llm_unlearn.methods import METHODS
from llm_unlearn.metrics import METRICS
from llm_unlearn.modifiers import modifiers
from llm_unlearn.recipe import MethodSection
from llm_unlearn.runfolder import GRID_ALIGNED, RunFolder, write_atomic
from llm_unlearn.terms import TERMS

CARD_FILE = "README.md"
#: the run's own files, under this folder of the repo
AUDIT_DIR = "audit"
#: a LoRA run's adapter, under this folder of the repo
ADAPTER_DIR = "adapter"


@dataclass(frozen=True)
class PlannedFile:
    """One file to upload: where it lands in the repo, where it is read from, its size in bytes."""

    path_in_repo: str
    local: Path
    size: int


@dataclass(frozen=True)
class Commit:
    """The files of one commit on one branch (`main` for the model, a quantizer name for its variant)."""

    revision: str
    files: tuple[PlannedFile, ...]


@dataclass(frozen=True)
class UploadPlan:
    repo_id: str
    private: bool
    model: str
    card: ModelCard
    card_path: Path
    commits: tuple[Commit, ...]
    notes: tuple[str, ...]


def _checkpoint(run_dir: Path, model: str) -> Path:
    audited = RunFolder(run_dir).audited_models().get(model)
    return Path(audited["checkpoint"]) if audited else RunFolder(run_dir).checkpoint(model)


def plan_push(
    run_dir: Path,
    repo_id: str,
    model: str | None = None,
    private: bool = False,
    with_quantized: bool = False,
    with_adapter: bool = False,
) -> UploadPlan:
    """What `push` would upload, read from the run folder only; the card is rendered, not written.
    `with_quantized` rebuilds each cached quantized variant into `hub/` once (no network)."""
    check_repo_id(repo_id)
    folder = RunFolder(run_dir)
    folder.require_run()
    model = folder.choose_model(model)
    checkpoint = _checkpoint(run_dir, model)
    adapter = _adapter_files(run_dir, checkpoint) if with_adapter else []
    card = model_card(run_dir, model, repo_id, with_adapter)
    card_path = folder.hub_card(model)
    card_file = PlannedFile(CARD_FILE, card_path, len(str(card).encode()))
    own = [("recipe.yaml", folder.recipe), ("results.jsonl", folder.results)]
    if model not in folder.audited_models():
        own.append(("method.json", folder.method_file(model)))
    run_files = [PlannedFile(f"{AUDIT_DIR}/{name}", path, path.stat().st_size) for name, path in own]
    commits = [Commit("main", (*_checkpoint_files(checkpoint), *adapter, card_file, *run_files))]
    notes = []
    if with_quantized:
        variants = folder.quantized(model)
        found = sorted(p for p in variants.glob("*") if (p / CONFIG).is_file()) if variants.is_dir() else []
        if not found:
            notes.append(
                f"quantized variants: none; {variants} holds no quantized checkpoints (the audit writes "
                "them there when it quantizes this model), so only the full-precision model is pushed"
            )
        for variant in found:
            _check_revision(variant.name)
            loadable = materialize(variant, folder.hub_quantized(model, variant.name))
            commits.append(Commit(variant.name, (*_checkpoint_files(loadable), card_file)))
    return UploadPlan(repo_id, private, model, card, card_path, tuple(commits), tuple(notes))


def push(
    run_dir: Path,
    repo_id: str,
    model: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    with_quantized: bool = False,
    with_adapter: bool = False,
) -> UploadPlan:
    """Write the model card to RUN_DIR/hub/<model>/README.md, print the plan and, unless `dry_run`,
    upload it with huggingface_hub. Without a token (and not `dry_run`) nothing is touched."""
    token = None if dry_run else get_token()
    if not dry_run and not token:
        raise UserError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (or use --dry-run)"
        )
    plan = plan_push(run_dir, repo_id, model, private, with_quantized, with_adapter)
    if not dry_run:  # no network or a refused token: one line, before the card or the plan is written
        _hub_call(repo_id, lambda: HfApi(token=token).whoami())
    write_atomic(plan.card_path, str(plan.card))
    print(format_plan(plan, dry_run))
    if not dry_run:
        _upload(plan, token)
    return plan


def format_plan(plan: UploadPlan, dry_run: bool) -> str:
    """The plan as the terminal shows it: repo, visibility, every file with its size and source."""
    visibility = "private" if plan.private else "public"
    lines = [
        f"{'dry run, nothing uploaded: ' if dry_run else ''}push {plan.model} to "
        f"https://huggingface.co/{plan.repo_id} ({visibility} if created; an existing repo keeps its own)",
        f"model card written to {plan.card_path}",
    ]
    for commit in plan.commits:
        total = sum(f.size for f in commit.files)
        lines.append(f"branch {commit.revision}: {len(commit.files)} files, {_size(total)}")
        width = max(len(f.path_in_repo) for f in commit.files)
        lines += [f"  {f.path_in_repo:<{width}}  {_size(f.size):>10}  {f.local}" for f in commit.files]
    return "\n".join([*lines, *plan.notes])


def model_card(run_dir: Path, model: str, repo_id: str, with_adapter: bool = False) -> ModelCard:
    """The card of `model` (RUN@TARGET): metadata with model-index, and a body a reader can act on;
    `with_adapter`: the repo holds the LoRA adapter too, under `adapter/`."""
    folder = RunFolder(run_dir)
    recipe = folder.read_recipe()
    run, target = model.split("@", 1)
    audited = folder.audited_models().get(model)
    if audited is not None:
        return _audited_card(run_dir, recipe, audited, repo_id)
    section = _method_section(recipe, run)
    resolved = folder.read_method(model)
    rows, cells, data = _card_audit(run_dir, recipe, run, target, repo_id, _tags(section, recipe))
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"{_base_description(recipe, target)} after **unlearning** a forget set with "
        f"llm-unlearn (run `{run}`, method `{section.name}`: "
        f"{METHODS.get(section.name).description}), then audited for whether the forgetting survives "
        "quantization.",
        "",
        *verdict_markdown(cells, run, target),
        "## Unlearning",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in _unlearning_facts(recipe, section, resolved, target)],
        "",
        "### Training hyper-parameters",
        "",
        "| parameter | value |",
        "|---|---|",
        *[f"| `{key}` | `{value}` |" for key, value in _hyper_parameters(recipe, resolved).items()],
        "",
        *_audit_table(cells, rows, run, target),
        "## Files",
        "",
        "- the model (safetensors) and its tokenizer, as the run saved them"
        + (" (the LoRA adapter merged into the base weights)" if resolved.get("lora") else ""),
        f"- `{AUDIT_DIR}/recipe.yaml`: the recipe of the run (`llm-unlearn run` it to reproduce the run)",
        f"- `{AUDIT_DIR}/results.jsonl`: every audit cell of the run (all its models), per example too",
        f"- `{AUDIT_DIR}/method.json`: the method settings resolved at run time",
        *(
            [
                f"- `{ADAPTER_DIR}/`: the LoRA adapter before merging; "
                f'`PeftModel.from_pretrained(base_model, "{repo_id}", subfolder="{ADAPTER_DIR}")`'
            ]
            if with_adapter
            else []
        ),
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _card_audit(
    run_dir: Path, recipe: dict[str, Any], run: str, target: str, repo_id: str, tags: list[str]
) -> tuple[list[dict[str, Any]], AuditCells, ModelCardData]:
    """What every card shows of the audit: the model's results rows, the run's cells (intervals,
    recoveries, verdicts) and the card's metadata with a model-index entry per row."""
    folder = RunFolder(run_dir)
    results = ResultsFile(folder.results)
    rows = [r for r in results if r["model"] == run and r["target"] == target]
    if not rows:
        raise UserError(f"{folder.results}: no audit results for {run}@{target}; run the audit first")
    cells = AuditCells(results, verdict_settings(recipe, str(folder.recipe)))
    source, base = recipe["data"]["source"], recipe["model"]["target"]
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        base_model=base if _is_hub(base) else None,
        datasets=[source] if _is_hub(source) else None,
        license=_base_license(base),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        eval_results=[_eval_result(r, source) for r in rows],
    )
    return rows, cells, data


def _audited_card(run_dir: Path, recipe: dict[str, Any], audited: dict[str, str], repo_id: str) -> ModelCard:
    """The card of a model unlearned elsewhere and audited here: its source, the verdict and the
    audit table; how it was unlearned is its maker's to tell."""
    run, target = audited["name"], audited["target"]
    tags = ["llm-unlearn", "unlearning", "quantization-robustness-audit"]
    rows, cells, data = _card_audit(run_dir, recipe, run, target, repo_id, tags)
    origin = f"`{audited['source']}`" if _is_hub(audited["source"]) else "a local checkpoint"
    base_text = _base_description(recipe, target)
    base_text = base_text if base_text.startswith("`") else base_text[0].lower() + base_text[1:]
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"An unlearned version of {base_text}, made elsewhere ({origin}) and "
        "audited with llm-unlearn for whether its forgetting survives quantization.",
        "",
        *verdict_markdown(cells, run, target),
        *_audit_table(cells, rows, run, target),
        "## Files",
        "",
        "- the model (safetensors) and its tokenizer, as audited",
        f"- `{AUDIT_DIR}/recipe.yaml`: the audit's recipe (`llm-unlearn audit` it to reproduce the audit)",
        f"- `{AUDIT_DIR}/results.jsonl`: every audit cell of the run (all its models), per example too",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _audit_table(cells: AuditCells, rows: list[dict[str, Any]], run: str, target: str) -> list[str]:
    """Per metric: the target and retrain model at full precision, then this model under each quantizer
    with its recovery ratio (report.py's cells)."""
    quantizers = list(dict.fromkeys(r["quantizer"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    lines = [
        "## Quantization-robustness audit",
        "",
        "Each metric [its interval] of this model at full precision (`fp`) and quantized, next to the",
        "model before unlearning (target) and a model never trained on the forget set (retrain). In",
        "brackets, the recovery ratio [its interval]: the share of the forgotten amount that quantization",
        "brings back (0 % = the forgetting holds, 100 % = back at the target), or why there is none (not",
        "forgotten: unlearning did not move the metric by a point clear of 0; nothing to forget: the target",
        "knows no more than the retrain model).",
        "",
        "| metric | target | retrain | " + " | ".join(quantizers) + " |",
        "|---|---|---|" + "---|" * len(quantizers),
    ]
    for metric in metrics:
        found = [cells.get("target", target, "fp", metric), cells.get("retrain", "-", "fp", metric)]
        found += [cells.get(run, target, q, metric) for q in quantizers]
        texts = ["–" if c is None else c.text() for c in found]
        lines.append(f"| {metric_title(metric)} | " + " | ".join(texts) + " |")
    lines += ["", "Quantizers:", ""]
    configs = {r["quantizer"]: r.get("quantizer_config", {}) for r in rows}
    lines += [f"- `{q}`: `{json.dumps(configs[q], sort_keys=True)}`" for q in quantizers]
    return [*lines, ""]


def _eval_result(record: dict[str, Any], source: str) -> EvalResult:
    """One model-index entry: a metric under one quantizer (`fp` = the model as uploaded)."""
    metric, quantizer = record["metric"], record["quantizer"]
    config, splits = next(iter(METRICS.get(metric).requires.items())) if metric in METRICS else (None, ())
    return EvalResult(
        task_type="text-generation",
        dataset_type=source if _is_hub(source) else "muse-layout",
        dataset_name=_dataset_label(source),
        dataset_config=config,
        dataset_split=",".join(splits) or None,
        metric_type=metric,
        metric_name=f"{metric} ({quantizer})",
        metric_config=quantizer,
        metric_value=round(float(record["agg_value"]), 4),
    )


def _unlearning_facts(
    recipe: dict[str, Any], section: MethodSection, resolved: dict[str, Any], target: str
) -> list[tuple[str, str]]:
    """What the card says about the unlearning, from what the run resolved (`.method.json`)."""
    if "terms" not in resolved:
        raise UserError(
            f"{section.run_name}: its .method.json predates recorded term settings; delete that checkpoint "
            "and re-run to write them"
        )
    terms = resolved["terms"]
    forget = next(t for t in terms if TERMS.get(t).part == "forget" and not TERMS.get(t).regulariser)
    retain = next((t for t in terms if TERMS.get(t).part == "retain"), None)
    data = recipe["data"]
    facts = [
        ("method", f"`{section.name}`: forget term `{forget}`, retain term `{retain or 'none'}`"),
        ("base model", _base_description(recipe, target)),
        ("forget set", f"{_dataset_label(data['source'])}, raw split `{data['forget_split']}`"),
        ("retain set", f"{_dataset_label(data['source'])}, raw split `{data['retain_split']}`"),
    ]
    if resolved.get("trained"):
        trained = resolved["trained"]
        facts.append(
            (
                "trained parameters",
                f"{trained['count']} tensors ({trained['param_share']:.1%}); the rest unchanged",
            )
        )
    for modifier in modifiers():
        facts += modifier.facts(resolved)
    if resolved.get("lora"):
        lora = resolved["lora"]
        facts.append(
            (
                "LoRA",
                f"r {lora['r']}, alpha {lora['alpha']}, modules `{lora['target_modules']}`; "
                "merged into the base weights (this repo holds the merged model)",
            )
        )
    return facts


def _hyper_parameters(recipe: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """The recipe's train section with what the run resolved: lr, each term's weight and parameters."""
    params: dict[str, Any] = {**recipe.get("train", {}), "learning_rate": resolved["learning_rate"]}
    params["max_length"] = recipe["data"]["max_length"]
    for term, entry in resolved["terms"].items():
        spec = TERMS.get(term)
        if spec.regulariser:  # a modifier's term: <term>_weight, <term>_<parameter>
            params[f"{term}_weight"] = entry["weight"]
            params.update({f"{term}_{key}": value for key, value in entry["params"].items()})
            continue
        if spec.part == "retain":
            params["retain_weight"] = entry["weight"]
        params.update(entry["params"])
    for modifier in modifiers():
        params.update(modifier.hyper_parameters(resolved))
    return params


def _base_description(recipe: dict[str, Any], target: str) -> str:
    base = recipe["model"]["target"]
    demo = {DEMO: "the llm-unlearn demo model", DEMO_QUICK: "the llm-unlearn quick demo model"}
    name = demo.get(base) or (f"`{base}`" if _is_hub(base) else "a local model")
    if target == GRID_ALIGNED:
        return f"A copy of {name} with its Linear weights on the `{recipe['model']['grid_align']}` grid"
    return name[0].upper() + name[1:]


def _dataset_label(source: str) -> str:
    """How the card names the data: the Hub id, or a description; never a local path."""
    if source == DEMO:
        return "the llm-unlearn demo benchmark (MUSE layout)"
    return f"`{source}`" if _is_hub(source) else "a local MUSE-layout dataset"


def _is_hub(name: str) -> bool:
    return name not in DEMO_MODELS and not Path(name).expanduser().exists() and is_hub_id(name)


def _base_license(base: str) -> str | None:
    """The base model's license from its card, when that card is on disk (a local folder or the Hub
    cache); unknown otherwise, since the plan reads no network."""
    if _is_hub(base):
        cached = try_to_load_from_cache(base, CARD_FILE)
        card = Path(cached) if isinstance(cached, str) else None
    else:
        card = Path(base).expanduser() / CARD_FILE
    if card is None or not card.is_file():
        return None
    return ModelCard.load(card, ignore_metadata_errors=True).data.license


def _tags(section: MethodSection, recipe: dict[str, Any]) -> list[str]:
    tags = ["llm-unlearn", "unlearning", "quantization-robustness-audit", section.name]
    tags += [tag for modifier in modifiers() for tag in modifier.tags(getattr(section, modifier.name))]
    return tags + (["lora"] if recipe["model"].get("lora") else [])


def _method_section(recipe: dict[str, Any], run: str) -> MethodSection:
    for entry in recipe["method"]:
        section = MethodSection.model_validate(entry)
        if section.run_name == run:
            return section
    raise UserError(f"recipe.yaml has no method named {run!r}; the run folder is inconsistent")


def _checkpoint_files(folder: Path) -> list[PlannedFile]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not any(p.suffix == ".safetensors" for p in files):
        raise UserError(f"{folder}: no .safetensors weights; push uploads safetensors checkpoints only")
    return [PlannedFile(p.name, p, p.stat().st_size) for p in files]


def _adapter_files(run_dir: Path, checkpoint: Path) -> list[PlannedFile]:
    """The LoRA adapter's files, for `adapter/` in the repo; peft's template README is left out
    (the repo's card describes the adapter)."""
    folder = RunFolder(run_dir).adapter(checkpoint.name)
    if not RunFolder(run_dir).read_recipe()["model"].get("lora"):
        raise UserError(f"--with-adapter: {checkpoint.name} is not a LoRA run (its recipe has no model.lora)")
    if not folder.is_dir():
        raise UserError(
            f"--with-adapter: no adapter in {folder} (a run made before adapters were saved); "
            f"delete {checkpoint} and re-run to save it"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != CARD_FILE)
    return [PlannedFile(f"{ADAPTER_DIR}/{p.name}", p, p.stat().st_size) for p in files]


def _check_revision(name: str) -> None:
    # a branch name of the quantized variant; git refuses these characters
    if not name or any(c in name for c in " ~^:?*[\\") or ".." in name:
        raise UserError(f"quantized/{name}: not usable as a branch name; rename the folder")


def _upload(plan: UploadPlan, token: str) -> None:
    """Create the repo (if new) and one commit per branch, with huggingface_hub."""
    api = HfApi(token=token)

    def commits() -> None:
        api.create_repo(plan.repo_id, private=plan.private, exist_ok=True)
        for commit in plan.commits:
            if commit.revision != "main":
                api.create_branch(plan.repo_id, branch=commit.revision, exist_ok=True)
            api.create_commit(
                plan.repo_id,
                [CommitOperationAdd(f.path_in_repo, f.local) for f in commit.files],
                commit_message=f"llm-unlearn push of {plan.model}"
                + ("" if commit.revision == "main" else f" quantized with {commit.revision}"),
                revision=commit.revision,
            )

    # Each commit lands whole or not at all, and the repo and branches are made with exist_ok: an
    # upload cut off midway is finished by the same push, which re-sends only what the Hub lacks.
    _hub_call(plan.repo_id, commits, "; re-run the same push to finish it")


def _hub_call(repo_id: str, call: Callable[[], object], then: str = "") -> None:
    """`call()`, its failure one line (ending in `then`): huggingface_hub reports a refused token, a
    missing network or offline mode with many exception types (HfHubHTTPError, OfflineModeIsEnabled,
    httpx's), each the user's to fix."""
    try:
        call()
    except Exception as err:
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(f"push to {repo_id}: {type(err).__name__}: {detail}{then}") from None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exponent = min(3, (n.bit_length() - 1) // 10)
    return f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"
