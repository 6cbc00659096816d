"""`run(recipe)`: targets -> unlearn each method -> audit every variant -> report.

Stages talk through files in the run folder (checkpoints, results.jsonl), so a re-run skips
whatever is already done. Under `accelerate launch` every process trains and every process takes
part in the audit, each running its share of every metric's batches (results are gathered, so
the numbers are those of one process); the main process alone writes the run folder's files.
"""

from __future__ import annotations

import os
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm_unlearn.audit.relearn import check_lora_fits, relearnings
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.audit.run import NO_TARGET, AuditModel, audit
from llm_unlearn.audit.write import write_report
from llm_unlearn.callbacks import StopOnMetric
from llm_unlearn.columns import get_column
from llm_unlearn.context import prompt_budget, special_prefix_length, window_length
from llm_unlearn.data.benchmark import load_benchmark, training_texts, training_windows
from llm_unlearn.data.collate import ForgetRetainDataset
from llm_unlearn.data.corpora import DEMO, DEMO_QUICK, MuseCorpus
from llm_unlearn.data.tofu import DEMO_TOFU, TofuCorpus
from llm_unlearn.display import current_display, run_display
from llm_unlearn.errors import UserError
from llm_unlearn.methods import METHODS
from llm_unlearn.metrics import METRICS, EvalContext, required_splits
from llm_unlearn.models import (
    Checkpoint,
    check_same_model_family,
    demo_checkpoints,
    gguf_checkpoint,
    grid_align,
    load_model,
    load_tokenizer,
    materialize,
    model_skeleton,
    resolve_checkpoint,
    train_and_save,
)
from llm_unlearn.modifiers import modifiers
from llm_unlearn.quant.calibration import Calibration, build_calibration, calibration_texts
from llm_unlearn.recipe import MethodSection, Recipe, RecipeError, validate_recipe
from llm_unlearn.runfolder import GRID_ALIGNED, RunFolder, write_json
from llm_unlearn.tofu_checkpoints import demo_tofu_checkpoints
from llm_unlearn.trainer import UnlearningTrainer, training_config


def run(recipe: Recipe) -> Path:
    """`run_claimed` under the run's one display (warnings and training logs to the run folder's
    log file), then the run folder given up for the next run, even where the run failed."""
    folder = RunFolder(recipe.output.dir)
    try:
        with run_display(folder.log, show=_launch_state(recipe).is_main_process):
            return run_claimed(recipe)
    finally:
        folder.release()


def run_claimed(recipe: Recipe) -> Path:
    """Run the whole recipe; returns the run folder holding results.jsonl and report.md.

    Everything a user can get wrong (the data, every model named, a run folder of another
    experiment) is checked before the run folder is written, so a failed start claims nothing.
    """
    folder = RunFolder(recipe.output.dir)
    state = _launch_state(recipe)
    if recipe.device_map and state.num_processes > 1:
        # each process would spread its own copy of the model over the same GPUs
        raise UserError(
            f"device_map: auto spreads one model over every GPU, but {state.num_processes} processes were "
            "launched; launch one process, or remove device_map to give each process its own GPU"
        )
    check_run_folder(recipe, folder)

    # Data first: a data mistake should surface before minutes of model building.
    corpus = load_corpus(recipe)
    relearn = relearnings(recipe, corpus)
    # Downloads, GGUF conversions and the demo models go to shared caches: once, before the others read.
    with state.main_process_first():
        sources = resolve_sources(recipe)
    target = sources["model.target"].path
    tokenizer = load_tokenizer(target, field="model.target")
    for field, checkpoint in sources.items():
        if field != "model.target":
            check_same_model_family(target, checkpoint.model, field)
    check_target_fits(recipe, target, tokenizer)
    check_lora_fits(recipe, target)

    with state.main_process_first():  # one writer; the others then read what it wrote
        if state.is_main_process:
            folder.claim()  # the first write: a second run into this folder is refused here
            folder.models.mkdir(parents=True, exist_ok=True)
            folder.write_recipe(recipe.model_dump(mode="json"))
        label = recipe.target_label
        targets: dict[str, Path] = {label: target}
        if recipe.model.grid_align:
            aligned = folder.checkpoint(f"target@{GRID_ALIGNED}")
            targets[GRID_ALIGNED] = grid_align(target, recipe.model.grid_align, aligned)
        models = [AuditModel("target", name, path) for name, path in targets.items()]
        if "model.retrain" in sources:
            models.append(AuditModel("retrain", NO_TARGET, sources["model.retrain"].path))
        for i, entry in enumerate(recipe.models):
            path = materialize(sources[f"models.{i}.path"], folder.checkpoint(f"{entry.name}@{label}"))
            models.append(AuditModel(entry.name, label, path))
    ctx = EvalContext(tokenizer=tokenizer, corpus=corpus, batch_size=_eval_batch_size(recipe))
    # a metric's own recipe section (`Metric.settings`: lm-eval's tasks) travels in ctx.extra
    for section in sorted({METRICS.get(n).settings for n in METRICS.names()} - {None}):
        if getattr(recipe, section, None) is not None:
            ctx.extra[section] = getattr(recipe, section).model_dump()
    runs = [(m, t, folder.checkpoint(f"{m.run_name}@{t}")) for m in recipe.method for t in recipe.targets(m)]
    todo = sum(not dest.exists() for *_, dest in runs)
    display = current_display()
    stage = display.add_task("unlearning", total=todo) if todo else None
    for method, target_name, dest in runs:
        if not dest.exists():  # the stage's bar names the run in training (its own bar shows its steps)
            display.update(stage, description=f"unlearning {method.run_name} on the {target_name} target")
            unlearn(recipe, method, targets[target_name], dest, corpus, tokenizer, ctx)
            display.advance(stage)
        models.append(AuditModel(method.run_name, target_name, dest))
    if stage is not None:
        display.update(stage, description=f"unlearned {todo} runs")
    if state.is_main_process:
        folder.write_audited([_audited_entry(m, recipe) for m in models])

    # Every process audits (the metrics split their batches between them); main writes the files.
    results = ResultsFile.shared(folder.results)
    calibrations = _calibrations(recipe, corpus, tokenizer)
    kernels = recipe.evaluate_with == "kernels"
    audit(
        models, recipe.quantize, recipe.evaluate, ctx, results, display,
        calibrations.get(recipe.calibration.source), relearn=relearn, kernels=kernels,
        device_map=recipe.device_map, calibrations=calibrations,
    )  # fmt: skip
    if state.is_main_process:
        write_report(folder.root)
    return folder.root


#: recipe sections a re-run may change: more quantizers, relearn checks or metrics only add cells
#: to the audit (a relearn entry changed under its old name is recomputed: its cells record settings)
RESUMABLE_CHANGES = ("name", "quantize", "evaluate", "relearn", "verdict", "output", "device_map")


def check_run_folder(recipe: Recipe, folder: RunFolder) -> None:
    """Refuse a run folder made by a different experiment: its checkpoints and results would be
    reused as if this recipe had produced them. Reads only; the folder is claimed once the inputs
    are checked. A re-run may add audited models, not change the path of one already audited."""
    resolved = recipe.model_dump(mode="json")
    if folder.root.exists() and not folder.root.is_dir():
        raise UserError(f"output.dir: {folder.root} is a file; give a folder for the run")
    existing = next((p for p in (folder.root, *folder.root.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output.dir: {existing} is not writable; choose a folder you can write to")
    before = folder.read_recipe()
    # A run that failed before it made a checkpoint or a result leaves nothing to protect
    if before is None or not (folder.results.exists() or any(folder.models.glob("*@*"))):
        return
    before = _as_resolved(before)
    changed = [
        k for k in resolved if k not in (*RESUMABLE_CHANGES, "models") and before.get(k) != resolved[k]
    ]
    earlier = {m["name"]: m["path"] for m in before.get("models", [])}
    changed += [
        f"models ({m['name']})" for m in resolved["models"] if earlier.get(m["name"], m["path"]) != m["path"]
    ]
    if changed:
        raise UserError(
            f"output.dir {folder.root} holds a run of a recipe with other {', '.join(changed)}; "
            "choose another output.dir (or delete that folder to start over)"
        )


def _as_resolved(stored: dict) -> dict:
    """A stored recipe.yaml as this version resolves it, so that what an older version wrote compares
    equal when unchanged: fields added since at their defaults (model.name), values renamed since by
    their new names (method targets `grid`). As stored where it no longer validates: it is then
    compared as it is, and differs where this version's recipe differs."""
    try:
        return validate_recipe(stored).model_dump(mode="json")
    except RecipeError:
        return stored


def load_corpus(recipe: Recipe) -> MuseCorpus | TofuCorpus:
    """The benchmark's splits the metrics and the training need: MUSE's raw forget/retain texts, or
    TOFU's forget/retain question-answer pairs."""
    data = recipe.data
    needs = required_splits(list(recipe.evaluate))
    training = "tofu" if data.kind == "tofu" else "raw"
    roles = ("forget", "retain") if data.kind == "tofu" else (data.forget_split, data.retain_split)
    needs.setdefault(training, set()).update(roles)
    return load_benchmark(data.source, needs, data.kind, data.forget_split, data.template)


def check_target_fits(recipe: Recipe, target: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Every column the recipe names has its backend installed and can be applied to the target
    (shapes only, on the meta device), and its context has room for what each metric generates:
    found now, not after training."""
    skeleton = model_skeleton(target)
    for name in recipe.evaluate:
        if METRICS.get(name).new_tokens:
            keep = special_prefix_length(tokenizer)
            try:
                prompt_budget(skeleton, METRICS.get(name).new_tokens, keep, name)
            except UserError as err:
                raise UserError(f"evaluate: {err}") from None
    named = [("quantize", name) for name in recipe.quantize]
    if recipe.model.grid_align:
        named.append(("model.grid_align", recipe.model.grid_align))
    named += [  # what a modifier quantizes the target with before training (`Modifier.quantizers`)
        (f"method.{i}.{modifier.name}.{key}", name)
        for i, m in enumerate(recipe.method)
        for modifier, section in m.active_modifiers()
        for key, name in modifier.quantizers(section)
    ]
    for field, name in named:
        try:
            column = get_column(name)
            column.config()  # names its backend's version: a missing backend is one line now
            column.check_model(skeleton)
        except UserError as err:
            raise UserError(f"{field}: {err}") from None


def resolve_sources(recipe: Recipe) -> dict[str, Checkpoint]:
    """Every model the recipe names, by recipe field, resolved to local files (downloaded, GGUF
    converted, the demo models built, as needed): model.target, model.retrain, models.<i>.path."""
    named = (recipe.model.target, recipe.model.retrain)
    # what the user trusts, for every model named
    trust = {"allow_pickle": recipe.model.allow_pickle, "trust_remote_code": recipe.model.trust_remote_code}
    # the demo's checkpoints that the fields name, built on first use
    wanted = [key for name, key in zip(named, ("target", "retrain"), strict=True) if name == DEMO]
    wanted += ["quick-target"] if recipe.model.target == DEMO_QUICK else []
    demo = demo_checkpoints(wanted) if wanted else {}
    if DEMO_TOFU in named:
        demo |= {f"{DEMO_TOFU}/{k}": v for k, v in demo_tofu_checkpoints(recipe.data.forget_split).items()}
    target = recipe.model.target
    if target in (DEMO, DEMO_QUICK, DEMO_TOFU):
        key = {DEMO: "target", DEMO_QUICK: "quick-target", DEMO_TOFU: f"{DEMO_TOFU}/target"}[target]
        sources = {"model.target": Checkpoint(target, demo[key])}
    elif recipe.model.gguf_file:
        path = gguf_checkpoint(target, recipe.model.gguf_file)
        sources = {"model.target": Checkpoint(f"{target}/{recipe.model.gguf_file}", path)}
    else:
        sources = {"model.target": resolve_checkpoint(target, "model.target", **trust)}
    if sources["model.target"].base is not None:
        raise UserError("model.target: is a PEFT adapter; give the full model (or the adapter's base)")
    retrain = recipe.model.retrain
    if retrain is not None:
        if retrain in (DEMO, DEMO_TOFU):
            found = Checkpoint(retrain, demo["retrain" if retrain == DEMO else f"{DEMO_TOFU}/retrain"])
        else:
            found = resolve_checkpoint(retrain, "model.retrain", **trust)
        if found.base is not None:
            raise UserError("model.retrain: is a PEFT adapter; give the full retrain model")
        sources["model.retrain"] = found
    for i, entry in enumerate(recipe.models):
        sources[f"models.{i}.path"] = resolve_checkpoint(entry.path, f"models.{i}.path", **trust)
    return sources


def _audited_entry(model: AuditModel, recipe: Recipe) -> dict[str, str]:
    """One audited model as `audited.json` records it: where its checkpoint is and where it came from."""
    given = {m.name: m.path for m in recipe.models}
    if model.name == "target":
        source = (
            f"grid_align: {recipe.model.grid_align}" if model.target == GRID_ALIGNED else recipe.model.target
        )
    elif model.name == "retrain":
        source = recipe.model.retrain or ""
    else:
        source = given.get(model.name, f"unlearned by this run ({model.name})")
    return {"name": model.name, "target": model.target, "checkpoint": str(model.path), "source": source}


def unlearn(
    recipe: Recipe,
    method: MethodSection,
    target: Path | str,
    dest: Path,
    corpus: MuseCorpus,
    tokenizer: PreTrainedTokenizerBase,
    ctx: EvalContext,
) -> None:
    """Unlearn `method` from `target` into the checkpoint `dest` (saved by the main process)."""
    spec = METHODS.get(method.name)
    model = load_model(target, field="model.target")
    max_length = window_length(recipe.data.max_length, model)
    forget = training_windows(recipe.data, corpus, "forget", tokenizer, max_length)
    retain = None
    if spec.retain_loss is not None:
        retain = training_windows(recipe.data, corpus, "retain", tokenizer, max_length)
    prepared = {}  # what the run's modifiers resolve from the target (`Modifier.prepare`)
    for modifier, section in method.active_modifiers():
        prepared.update(modifier.prepare(section, model))
    folder, model_name = RunFolder(dest.parents[1]), dest.name
    args = training_config(recipe, method, folder.trainer_scratch(model_name), **prepared)
    # What the trainer would refuse (OEU under FSDP, a layer the model lacks, ...) as one line, now.
    UnlearningTrainer.check(args, model, PartialState().distributed_type.value)
    lora = recipe.model.lora
    if lora is not None:
        modules = lora.target_modules
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=modules if isinstance(modules, str) else list(modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    callbacks = []
    if method.stop is not None:
        callbacks.append(StopOnMetric(method.stop.metric, method.stop.below, method.stop.every_n_steps, ctx))
    trainer = UnlearningTrainer(
        model=model,
        args=args,
        train_dataset=ForgetRetainDataset(forget, retain, seed=args.seed),
        processing_class=tokenizer,
        callbacks=callbacks,
    )

    def finish(network: PreTrainedModel, state_dict: dict | None) -> tuple[PreTrainedModel, dict | None]:
        # The training log (losses, and the stop metric when one is set) sits beside the checkpoint,
        # with the terms as they trained (weight and every parameter, defaults included) and what each
        # modifier resolved at run time (its `record`, None when off): the model card reads them
        # from here, so it cannot drift from the run.
        write_json(folder.training_log(model_name), trainer.state.log_history)
        weights, params = dict(args.weighted_terms()), args.resolved_params()
        resolved = {
            "method": method.name,
            "learning_rate": args.learning_rate,
            "terms": {
                t: {"weight": weights[t], "params": p.model_dump(mode="json")} for t, p in params.items()
            },
        }
        for modifier in modifiers():
            resolved.update(modifier.record(getattr(method, modifier.name), args, trainer))
        resolved.update(lora=lora.model_dump() if lora else None, trained=trainer.trained)
        write_json(folder.method_file(model_name), resolved)
        if lora is None:
            return network, state_dict
        # A LoRA run is audited as the model it would ship: the adapter merged into the base weights;
        # the adapter alone as well (for `push --with-adapter`), from the gathered weights, before
        # merging consumes it, and before the checkpoint, whose existence marks the run done.
        network.save_pretrained(folder.adapter(model_name), state_dict=state_dict)
        return network.merge_and_unload(), None

    train_and_save(trainer, tokenizer, dest, f"unlearning {model_name}", finish)


def _calibrations(
    recipe: Recipe, corpus: MuseCorpus, tokenizer: PreTrainedTokenizerBase
) -> dict[str, Calibration]:
    """GPTQ/AWQ's calibration windows by source, one set for each source a column calibrates on:
    the recipe's calibration section's for plain names, the named one for `gptq-w4-g128@forget`;
    every set sampled as the section says (samples, seq_len, seed), so only the text differs."""
    c = recipe.calibration
    columns = [get_column(name) for name in recipe.quantize]
    sources = {q.calibration_source or c.source for q in columns if q.needs_calibration}
    if not sources:  # the splits are read only for a calibrated quantizer
        return {}
    forget, retain = (training_texts(recipe.data, corpus, role) for role in ("forget", "retain"))
    return {
        source: build_calibration(
            calibration_texts(source, forget, retain), tokenizer, source, c.samples, c.seq_len, c.seed
        )
        for source in sorted(sources)
    }


def _launch_state(recipe: Recipe) -> PartialState:
    """The processes of the launch, as the Trainer will see them: its TrainingArguments re-create
    this state, and on CPUs count the processes of a launch only with `use_cpu` (or `accelerate
    launch --cpu`). Built as they would, so a run that trains nothing audits with the same state."""
    cpu = bool(recipe.train.get("use_cpu")) or parse_flag_from_env("ACCELERATE_USE_CPU")
    return PartialState(cpu=cpu)


def _eval_batch_size(recipe: Recipe) -> int:
    return int(recipe.train.get("per_device_eval_batch_size", 16))
