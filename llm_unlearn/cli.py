"""`llm-unlearn`: a thin command line over the Python API.

Every user error (recipe, data, model, unknown name) is printed as one line on stderr with
exit code 2; Ctrl-C is one line too, with exit code 130; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import yaml

from llm_unlearn.columns import ROUTES
from llm_unlearn.data.corpora import DEMO_MODELS, DEMO_QUICK
from llm_unlearn.errors import UserError
from llm_unlearn.locations import check_checkpoint, check_repo_id, check_source
from llm_unlearn.names import Kind, check_name, reference_flag_help
from llm_unlearn.recipe_file import (
    CNN_RECIPE_SHAPE,
    apply_overrides,
    check_names,
    read_recipe_file,
    read_unlearning_recipe,
)
from llm_unlearn.registry import UnknownNameError
from llm_unlearn.runfolder import GRID_ALIGNED, RunFolder

if TYPE_CHECKING:
    from llm_unlearn.recipe import Recipe

SUBCOMMANDS = ("run", "audit", "check", "demo", "evaluate", "report", "verify", "diagnose", "cnn", "push")


def demo_recipe(full: bool = False, benchmark: str = "muse", quick: bool = False) -> Path:
    if benchmark == "tofu":
        name = "demo_tofu.yaml"
    else:
        name = "demo_full.yaml" if full else "demo_quick.yaml" if quick else "demo.yaml"
    return Path(str(files("llm_unlearn") / "recipes" / name))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # only a run of `evaluate` checks its reference flags' values with the metrics (torch): any other
    # command, and `--help`, parse without importing them, so they and a refused path answer at once
    evaluate = argv[:1] == ["evaluate"] and not {"-h", "--help"} & set(argv)
    try:
        if evaluate:  # its paths and names, before the metrics
            _refuse_evaluate(_parser(reference_types=False).parse_args(argv))
        args = _parser(reference_types=evaluate).parse_args(argv)
        return args.func(args)
    except (UserError, UnknownNameError) as err:
        print(f"llm-unlearn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: the shell's code for SIGINT, and no traceback
        where = str(err) or "re-run the same command to start again"
        print(f"llm-unlearn: interrupted: {where}", file=sys.stderr)
        return 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with where the same command resumes: `pipeline.run` has released the
    run folder, and every file in it is whole or absent (runfolder.py), so nothing is lost."""


def _run(args: argparse.Namespace) -> int:
    _check_gate_flags(args)
    return _run_recipe(_load_recipe(args.recipe, args.set, runs=True), args)


def _load_recipe(path: Path, overrides: list[str], runs: bool) -> Recipe:
    """The recipe at `path`, its file read (and a missing or malformed one, or a misspelled name,
    refused) before the registries that validate it, and with them torch, are imported; where it
    `runs` here, a checkpoint path that is not here is refused too."""
    data = read_unlearning_recipe(path, overrides)
    if runs:  # `check` may validate a recipe written for another machine: its paths are that one's
        _check_locations(data)
    from llm_unlearn.recipe import validate_recipe

    return validate_recipe(data, where=str(path))


def _check_locations(data: dict) -> None:
    """Refuse a checkpoint the recipe mapping `data` names (model.target, model.retrain,
    models.<i>.path), or a data.source, that is neither here nor a Hub id, as the run would after
    importing torch."""
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    models = data.get("models")
    models = [models] if isinstance(models, dict) else models if isinstance(models, list) else []
    given = [
        ("model.target", model.get("target")),
        ("model.retrain", model.get("retrain")),
        *((f"models.{i}.path", m.get("path")) for i, m in enumerate(models) if isinstance(m, dict)),
    ]
    for field, spec in given:
        if isinstance(spec, str):
            check_checkpoint(spec, field)
    source = data["data"].get("source") if isinstance(data.get("data"), dict) else None
    if isinstance(source, str):  # the loaders' own check, before `data.benchmark` imports torch
        check_source(source, "data.source")


def _check_gate_flags(args: argparse.Namespace) -> None:
    """`--junit` reports the gate's cells, so it needs the gate's threshold; and a file to write."""
    if args.junit is None:
        return
    if args.fail_above is None:
        raise UserError("--junit: the JUnit report is the release gate's; give --fail-above PCT too")
    if args.junit.is_dir():
        raise UserError(f"--junit {args.junit}: is a folder; give an XML file name")


def _run_recipe(recipe, args: argparse.Namespace) -> int:
    """Run `recipe`, print where its files are, each model's verdict and, under `--fail-above`, the
    cells of the routes `--fail-on` names that fail the release gate (recorded in the certificate;
    as JUnit XML in `--junit` if given); 1 when one does, else 0."""
    from llm_unlearn.audit.certificate import write_certificate
    from llm_unlearn.audit.report import gate_summary
    from llm_unlearn.pipeline import run
    from llm_unlearn.runfolder import read_json

    try:
        folder = RunFolder(run(recipe))
    except KeyboardInterrupt:
        raise Interrupted(f"re-run the same command to resume from {recipe.output.dir}") from None
    verdict = read_json(folder.verdict) if folder.verdict.is_file() else {"models": [], "cells": []}
    print(f"results: {folder.results}\nreport:  {folder.report_md}, {folder.report_html}")
    print(f"log:     {folder.log} (warnings and training logs)")
    lines, failed = gate_summary(verdict, args.fail_above, str(folder.verdict), args.fail_on)
    print("\n".join(lines))
    if recipe.model.target in DEMO_MODELS:
        print("\n".join(_demo_models(folder, recipe.model.target)))
    fail_above, fail_on = args.fail_above, args.fail_on
    if fail_above is not None and folder.verdict.is_file():
        print(f"certificate: {write_certificate(folder.root, fail_above, fail_on)}")
    if args.junit is not None and fail_above is not None:
        from llm_unlearn.audit.junit import write_junit  # junitparser, only where a report is asked for

        print(f"junit: {write_junit(verdict, fail_above, folder.root.name, args.junit, fail_on)}")
    return 1 if failed else 0


def _demo_models(folder: RunFolder, target: str) -> list[str]:
    """Where the demo's natural target (`target`: demo or demo_quick) and retrain model are, and the
    audit of a model of one's own against them (`--target {target}` resolves the same cached models)."""
    paths = {m["name"]: m["checkpoint"] for m in folder.read_audited() if m["source"] in DEMO_MODELS}
    return [
        *(f"demo {name}: {path}" for name, path in paths.items()),
        f"audit a model of yours against them: llm-unlearn audit --target {target} --retrain demo "
        "--data demo --model NAME=PATH --out runs/mine",
    ]


def _audit(args: argparse.Namespace) -> int:
    _check_gate_flags(args)
    flags = [f"--{n.replace('_', '-')}" for n in AUDIT_FLAGS if getattr(args, n) not in (None, [], False)]
    if args.recipe is not None:
        if flags:
            raise UserError(f"audit: give a recipe file or {', '.join(flags)}, not both")
        return _run_recipe(_load_recipe(args.recipe, args.set, runs=True), args)
    for flag in ("target", "model", "data", "out"):
        if not getattr(args, flag):
            raise UserError(f"audit: --{flag} is required (or give an audit recipe file)")
    data = {
        "name": args.out.name,
        "model": {**_target(args.target), "retrain": args.retrain},
        "models": [_name_path(item) for item in args.model],
        "data": {"source": args.data},
        "quantize": _names(args.quantize or _default_quantizers(args.target), "--quantize"),
        "relearn": _relearn_entries(args.relearn),
        "output": {"dir": str(args.out)},
    }
    if args.metrics is not None:  # else the recipe's default: the benchmark's own metrics
        data["evaluate"] = _names(args.metrics, "--metrics")
    if args.batch_size is not None:
        data["train"] = {"per_device_eval_batch_size": args.batch_size}
    for flag in ("allow_pickle", "trust_remote_code"):  # never set unless given
        if getattr(args, flag):
            data["model"][flag] = True
    data = apply_overrides(data, args.set)
    check_names(data, "audit")
    _check_locations(data)
    from llm_unlearn.columns import get_column  # the registries, and torch: after the flags' checks
    from llm_unlearn.metrics import METRICS
    from llm_unlearn.recipe import validate_recipe

    recipe = validate_recipe(data, where="audit")
    if args.quantize is None and not any(item.startswith("quantize=") for item in args.set):
        # the default battery's attack columns, each where one of the evaluated metrics has cells
        # in it (the in-context probe asks forget QA: KnowMem, TOFU's probability, ROUGE, truth ratio)
        metrics = [METRICS.get(m) for m in recipe.evaluate]
        attacks = [c for c in AUDIT_ATTACKS if any(get_column(c).evaluates(m) for m in metrics)]
        recipe = validate_recipe({**data, "quantize": [*data["quantize"], *attacks]}, where="audit")
    return _run_recipe(recipe, args)


#: the default battery (README "Every route back"): as shipped, the full-precision model, 8- and
#: 4-bit RTN and the fp16/bf16 casts; under attack, magnitude pruning at 50 %, three forget QA pairs as
#: the forget QA metrics' shots, and relearning on forget text, fully and through a LoRA adapter
AUDIT_QUANTIZERS = "fp,rtn-w8,rtn-w4-g128,cast-fp16,cast-bf16"
AUDIT_ATTACKS = ("prune-mag-50", "incontext-forget-3")
AUDIT_RELEARN = (
    {"split": "forget", "samples": 8, "steps": 20, "learning_rate": 1.0e-4},
    {"split": "forget", "samples": 8, "steps": 20, "lora": {}},
)


def _default_quantizers(target: str) -> str:
    """`AUDIT_QUANTIZERS`, with the 4-bit column on the target's own grid where that is known: the
    grid a model is released on is the one whose rounding can undo its unlearning."""
    grid = known_grid(_target(target)["target"])
    return AUDIT_QUANTIZERS if grid is None else AUDIT_QUANTIZERS.replace("rtn-w4-g128", grid)


def known_grid(target: str) -> str | None:
    """The quantizer grid of `target` where this project made it: the demo's (its recipe's
    `model.grid_align`), or a run's grid-aligned target (`<run>/models/target@grid-aligned`, whose
    run's recipe.yaml names it); None otherwise."""
    path = Path(target).expanduser()
    if target in DEMO_MODELS:
        recipe = read_unlearning_recipe(demo_recipe(quick=target == DEMO_QUICK))
    elif path.name == f"target@{GRID_ALIGNED}" and path.parent.name == "models":
        recipe = RunFolder(path.parents[1]).read_recipe() or {}
    else:
        return None
    model = recipe.get("model")
    return model.get("grid_align") if isinstance(model, dict) else None


#: the flags that build an audit recipe on the command line (beside --set and --fail-above)
AUDIT_FLAGS = (
    "target", "model", "retrain", "data", "quantize", "metrics", "out", "relearn", "batch_size",
    "allow_pickle", "trust_remote_code",
)  # fmt: skip
ALLOW_PICKLE_HELP = (
    "accept checkpoints whose weights are only pickles (pytorch_model.bin): loading a pickle can run "
    "code, so only for files you trust"
)
TRUST_REMOTE_CODE_HELP = (
    "run the Python code of a checkpoint whose architecture is its own (config.json auto_map): "
    "transformers' trust_remote_code, recorded in certificate.json; only for code you trust"
)


def _name_path(item: str) -> dict[str, str]:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise UserError(f"--model {item!r}: expected NAME=PATH, e.g. npo=org/npo-model@v1")
    return {"name": name, "path": path}


def _target(item: str) -> dict[str, str]:
    """`--target PATH`, or `NAME=PATH` to label the target NAME (model.name) in results and report:
    NAME=PATH only when NAME is a name and the whole is no existing path (a folder may hold `=`)."""
    from llm_unlearn.runfolder import NAME_PATTERN

    name, sep, path = item.partition("=")
    if sep and path and re.match(NAME_PATTERN, name) and not Path(item).expanduser().exists():
        return {"name": name, "target": path}
    return {"target": item}


def _names(text: str, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"{flag} {text!r}: expected comma-separated names")
    return names


def _relearn_entries(items: list[str]) -> list[dict]:
    """`--relearn` as given, the default battery's relearning (`AUDIT_RELEARN`) without one, none
    for `--relearn none`."""
    if not items:
        return [dict(entry) for entry in AUDIT_RELEARN]
    if items == ["none"]:
        return []
    return [_relearn_entry(item) for item in items]


def _relearn_entry(item: str) -> dict:
    """`forget`, `retain`, or a YAML mapping such as `{split: forget, steps: 20}`."""
    if item in ("forget", "retain"):
        return {"split": item}
    try:
        entry = yaml.safe_load(item)
    except yaml.YAMLError:
        entry = None
    if not isinstance(entry, dict):
        raise UserError(
            f"--relearn {item!r}: expected forget, retain or a mapping such as '{{split: forget}}'"
        )
    return entry


def _check(args: argparse.Namespace) -> int:
    recipe = _load_recipe(args.recipe, args.set, runs=False)
    print(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.full and args.quick:
        raise UserError("demo: --full and --quick are two demos; give one of them")
    flag = "--full" if args.full else "--quick" if args.quick else None
    if flag and args.benchmark == "tofu":
        raise UserError(f"demo: {flag} is the MUSE demo's; the TOFU demo has one (recipes/demo_tofu.yaml)")
    args.recipe = demo_recipe(args.full, args.benchmark, args.quick)
    return _run(args)


def _cnn(args: argparse.Namespace) -> int:
    data = read_recipe_file(args.recipe, args.set, CNN_RECIPE_SHAPE)  # a refused file: before torch
    from llm_unlearn.cnn.recipe import validate_cnn_recipe
    from llm_unlearn.cnn.run import run_cnn

    out = run_cnn(validate_cnn_recipe(data, where=str(args.recipe)))
    print(f"results: {out / 'results.json'}\nAG table: {out / 'ag_table.md'}")
    return 0


def _refuse_evaluate(args: argparse.Namespace) -> None:
    """`evaluate`'s refusals of a name or a path, before its parser imports the metrics (and torch)
    for their reference flags (`_evaluate`'s own checks, the registry's and the loader's, then pass)."""
    if args.metrics is not None:  # else the benchmark's own, which its registry names
        _check_flag_names("metric", _names(args.metrics, "--metrics"), "--metrics")
    _check_out_file(args.out, "results.json")
    check_checkpoint(args.model, "--model")
    check_source(args.data, "--data")  # the loaders' own check, before `data.benchmark` imports torch


def _check_flag_names(kind: Kind, names: list[str], flag: str) -> None:
    """`names.check_name` of each name a flag gives, its refusal naming the flag."""
    for name in names:
        try:
            check_name(kind, name)
        except UserError as err:
            raise UserError(f"{flag}: {err}") from None


def _check_out_file(out: Path | None, example: str) -> None:
    if out is not None and out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a JSON file name, e.g. {out / example}")


def _evaluate(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from llm_unlearn.data.benchmark import detect_benchmark, load_benchmark
    from llm_unlearn.metrics import (
        METRICS,
        EvalContext,
        benchmark_defaults,
        evaluate,
        reference_flags,
        required_splits,
    )
    from llm_unlearn.models import eval_placement, load_model, load_tokenizer, resolve_checkpoint
    from llm_unlearn.runfolder import write_json

    kind = detect_benchmark(args.data)
    default = ",".join(benchmark_defaults(kind))
    names = _names(default if args.metrics is None else args.metrics, "--metrics")
    for name in names:
        METRICS.get(name)
    corpus = load_benchmark(args.data, required_splits(names), kind, args.forget_split, args.template)
    given = []  # each reference given by hand, read before the model is (a bad file fails first)
    for reference in reference_flags().values():
        value = getattr(args, _dest(reference.flag.name))
        if value is not None:
            load = reference.flag.load or (lambda parsed: parsed)
            given.append((reference, load(value)))
    checkpoint = resolve_checkpoint(args.model, "--model", args.allow_pickle, args.trust_remote_code)
    if checkpoint.base is not None:
        raise UserError("--model: is a PEFT adapter; `llm-unlearn audit` merges adapters into their base")
    ctx = EvalContext(
        tokenizer=load_tokenizer(checkpoint.path, field="--model"),
        corpus=corpus,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    for reference, value in given:
        ctx = reference.given(ctx, value)
    placement = eval_placement(PartialState().device)  # an accelerator when there is one, as the audit
    results = evaluate(load_model(checkpoint.path, field="--model", placement=placement), ctx, names)
    write_json(args.out, results)
    for name, result in results.items():
        ci = result.get("ci")
        interval = f" [{ci[0]:.2f}, {ci[1]:.2f}] (95 % bootstrap)" if ci else ""
        print(f"{name}: {result['agg_value']:.2f}{interval}")
    return 0


def _report(args: argparse.Namespace) -> int:
    if not (args.run_dir / "results.jsonl").is_file() or not (args.run_dir / "results.jsonl").stat().st_size:
        raise UserError(f"{args.run_dir}: no results in results.jsonl here; give the folder a run wrote")
    from llm_unlearn.audit.write import write_report  # the report's stack (torch): after the path's check

    print(write_report(args.run_dir))
    return 0


def _verify(args: argparse.Namespace) -> int:
    RunFolder(args.run_dir).require_certificate()
    if not args.path.exists():
        raise UserError(f"{args.path}: no such file or folder; give the file, or folder, about to be shipped")
    from llm_unlearn.audit.certificate import verify  # the audit's stack (torch): after the paths' checks

    passes, line = verify(args.run_dir, args.path)
    print(line)
    return 0 if passes else 1


def _push(args: argparse.Namespace) -> int:
    # the names and paths given, checked as `hub.plan_push` checks them, before its registries (torch);
    # without --model, `push` asks for a token before it reads the run for its only model
    check_repo_id(args.repo_id)
    folder = RunFolder(args.run_dir)
    folder.require_run()
    if args.model is not None:
        folder.choose_model(args.model)
    from llm_unlearn.hub import push

    push(
        args.run_dir,
        args.repo_id,
        args.model,
        args.private,
        args.dry_run,
        args.with_quantized,
        args.with_adapter,
    )
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    _check_out_file(args.out, "diagnose.json")
    _check_flag_names("quantizer", [args.quantizer], "--quantizer")
    check_checkpoint(args.target, "TARGET")
    check_checkpoint(args.unlearned, "UNLEARNED")
    from llm_unlearn.audit.run import diagnose_checkpoints  # the quantizers and torch: after the checks
    from llm_unlearn.models import check_same_model_family, load_tokenizer, resolve_checkpoint
    from llm_unlearn.quant import get_quantizer
    from llm_unlearn.quant.calibration import build_calibration, calibration_texts
    from llm_unlearn.quant.overlap import format_table
    from llm_unlearn.runfolder import write_atomic

    quantizer = get_quantizer(args.quantizer)
    no_codes = (
        f"--quantizer {args.quantizer}: has no integer codes to compare; choose rtn-, gptq-, awq- or bnb-"
    )
    if quantizer.name == "fp":
        raise UserError(no_codes)
    if quantizer.needs_calibration:
        # a name's own source (`gptq-w4-g128@generic`) overrides --calibration, as in the audit
        source = quantizer.calibration_source or args.calibration
        if source in ("retain", "forget"):
            given = (
                f"--quantizer {args.quantizer}" if quantizer.calibration_source else f"--calibration {source}"
            )
            raise UserError(f"{given}: diagnose reads no dataset; calibrate on generic text or a file")
        texts = calibration_texts(source, forget=[], retain=[])
    # as `evaluate` loads its model: a Hub id or GGUF file made local, pickles and a checkpoint's own
    # code refused unless allowed (never transformers' stdin prompt)
    target, unlearned = (
        resolve_checkpoint(spec, field, args.allow_pickle, args.trust_remote_code)
        for spec, field in ((args.target, "TARGET"), (args.unlearned, "UNLEARNED"))
    )
    for checkpoint, field in ((target, "TARGET"), (unlearned, "UNLEARNED")):
        if checkpoint.base is not None:
            raise UserError(f"{field}: is a PEFT adapter; `llm-unlearn audit` merges it into its base")
    if quantizer.needs_calibration:
        tokenizer = load_tokenizer(target.path, field="TARGET")
        quantizer.calibration = build_calibration(texts, tokenizer, source, args.samples, args.seq_len, 0)
    check_same_model_family(target.path, unlearned.path, "UNLEARNED", target_field="TARGET")
    # as in the audit: each model quantized alone into a cell on disk, then compared layer by layer
    with tempfile.TemporaryDirectory(prefix="llm_unlearn_diagnose_") as scratch:
        cells = Path(scratch) / "target", Path(scratch) / "unlearned"
        result = diagnose_checkpoints(target.path, unlearned.path, quantizer, *cells)
    if not result:
        raise UserError(no_codes)
    print(format_table(result))
    if args.out:
        record = {"quantizer_config": quantizer.config(), **result}
        write_atomic(args.out, json.dumps(record, indent=1, default=str))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, as every other user error (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")  # argparse's own: --reference-auc -> reference_auc


def _usage_error(parse):
    """`parse` with its ValueError's message as the usage error (argparse hides a ValueError's)."""

    def checked(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return checked


def _parser(reference_types: bool = True) -> argparse.ArgumentParser:
    """The command line; `reference_types`: `evaluate`'s retrain-reference flags checked as their
    metrics parse them (the metric registry, and so torch); else taken as text, for `--help` and the
    refusals that come before torch (their names and help are `names.json`'s either way)."""
    parser = _Parser(prog="llm-unlearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def recipe_command(name: str, func, help: str, with_recipe: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if with_recipe:
            p.add_argument("recipe", type=Path, help="recipe YAML file")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override, e.g. train.learning_rate=2e-4",
        )
        p.set_defaults(func=func)
        return p

    def checkpoint_flags(p: argparse.ArgumentParser) -> None:
        # what a verb that loads checkpoints may be told to accept; never on unless given
        p.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
        p.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)

    def fail_above(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--fail-above",
            type=float,
            metavar="PCT",
            help="exit 1 when any cell's recovery (verdict.json) is above PCT percent, or a model is not "
            "shown to forget: a release gate",
        )
        p.add_argument(
            "--fail-on",
            choices=(*ROUTES, "any"),
            default="any",
            help="the routes back whose cells --fail-above reads: shipped (full precision, formats, casts), "
            "attack (relearning, pruning, adversarial calibration, in-context) or any (default)",
        )
        p.add_argument(
            "--junit",
            type=Path,
            metavar="FILE",
            help="also write the gate as JUnit XML: one test case per gating cell (needs --fail-above)",
        )

    fail_above(recipe_command("run", _run, "unlearn, quantize, evaluate and report, as the recipe says"))
    p = recipe_command(
        "audit", _audit, "audit checkpoints unlearned elsewhere against their target", with_recipe=False
    )
    p.add_argument("recipe", type=Path, nargs="?", help="an audit recipe (a models: list), or use the flags")
    p.add_argument(
        "--target",
        metavar="[NAME=]PATH",
        help="the model before unlearning: folder, Hub id[@rev], .gguf file, 'demo' (the demo's natural "
        "target) or 'demo_quick' (the quick demo's); NAME labels it in results and report (e.g. "
        "released-4bit=org/model; default: target)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an unlearned checkpoint: folder, Hub id[@rev], PEFT adapter, or .gguf file (repeat)",
    )
    p.add_argument(
        "--retrain", help="a model trained without the forget set (PrivLeak's reference); 'demo': the demo's"
    )
    p.add_argument("--data", help="MUSE-layout folder, Hub id, or 'demo'")
    p.add_argument(
        "--quantize",
        help=f"comma-separated column names (default {AUDIT_QUANTIZERS}, with the 4-bit column on the "
        "target's grid where it is known: the demo's, or a run's grid-aligned target's; then "
        f"{','.join(AUDIT_ATTACKS)} where a metric has cells in them)",
    )
    p.add_argument("--metrics", help="comma-separated metric names (default: the benchmark's own)")
    p.add_argument("--out", type=Path, help="the run folder (resumable)")
    p.add_argument(
        "--relearn",
        action="append",
        default=[],
        help="a relearning column: forget, retain or a mapping such as '{split: forget, lora: {}}' "
        "(repeat); default: 20 steps on 8 forget texts, fully and through a LoRA adapter; none: no "
        "relearning",
    )
    p.add_argument("--batch-size", type=_at_least(1), help="evaluation batch size (default 16)")
    checkpoint_flags(p)
    fail_above(p)
    recipe_command("check", _check, "validate a recipe and print it resolved, without running it")
    p = recipe_command("demo", _demo, "the offline demo audit (recipes/demo.yaml)", with_recipe=False)
    fail_above(p)
    p.add_argument(
        "--benchmark",
        choices=("muse", "tofu"),
        default="muse",
        help="tofu: the TOFU demo (recipes/demo_tofu.yaml)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="also GPTQ, AWQ, NF4 and LLM.int8() columns (recipes/demo_full.yaml; needs [gptq,bnb])",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a first look in about 5 minutes on 2 cores: two methods on the grid-aligned target, "
        "fp, 4-bit and relearning (recipes/demo_quick.yaml)",
    )
    recipe_command("cnn", _cnn, "the CNN track: train, unlearn and score a quantized CNN (FA/RA/TA/MIA/AG)")

    p = sub.add_parser("evaluate", help="MUSE or TOFU metrics of one model on one benchmark")
    p.add_argument("--model", required=True, help="model folder, Hub id[@rev] or .gguf file")
    p.add_argument("--data", required=True, help="MUSE- or TOFU-layout folder, Hub id, 'demo' or 'demo_tofu'")
    p.add_argument("--metrics", help="comma-separated names (default: the benchmark's own metrics)")
    p.add_argument(
        "--forget-split",
        default="forget10",
        choices=("forget01", "forget05", "forget10"),
        help="TOFU's forget split",
    )
    p.add_argument(
        "--template", default="plain", choices=("plain", "llama2", "llama3"), help="TOFU's chat format"
    )
    p.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    p.add_argument("--batch-size", type=_at_least(1), default=16)
    types = {}  # each metric's retrain reference given by hand (metrics/: `RetrainReference.flag`)
    if reference_types:
        from llm_unlearn.metrics import reference_flags  # lazy, as every verb's: the metrics import torch

        types = {flag: _usage_error(r.flag.parse) for flag, r in reference_flags().items()}
    for flag, help in reference_flag_help().items():
        p.add_argument(flag, type=types.get(flag), help=help)
    p.add_argument("--limit", type=_at_least(1), help="examples per metric (smoke runs only)")
    checkpoint_flags(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "diagnose", help="bucket overlap and update kept of UNLEARNED vs TARGET, no evaluation"
    )
    p.add_argument("target", help="the model before unlearning: folder, Hub id[@rev] or .gguf file")
    p.add_argument("unlearned", help="the unlearned model: folder, Hub id[@rev] or .gguf file")
    p.add_argument("--quantizer", default="rtn-w4-g128", help="quantizer name, e.g. rtn-w4-g128, bnb-nf4")
    p.add_argument("--out", type=Path, help="JSON file for the per-layer and overall statistics")
    p.add_argument("--calibration", default="generic", help="GPTQ/AWQ calibration: generic or a text file")
    p.add_argument("--samples", type=int, default=32, help="GPTQ/AWQ calibration windows")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per calibration window")
    checkpoint_flags(p)
    p.set_defaults(func=_diagnose)

    p = sub.add_parser("report", help="rewrite report.md and report.html of a run folder from its results")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "verify",
        help="whether a file or folder about to ship is one the run's certificate covers, and passes",
    )
    p.add_argument("run_dir", type=Path, help="the run folder (its certificate.json)")
    p.add_argument("path", type=Path, help="the file, or folder of files, about to be shipped")
    p.set_defaults(func=_verify)

    p = sub.add_parser("push", help="upload one unlearned model of a run folder with an audit model card")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--repo-id", required=True, help="the Hub repository, ORG/NAME")
    p.add_argument("--model", help="RUN@TARGET, e.g. npo_gdr@grid-aligned (needed when the run has several)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--dry-run", action="store_true", help="print the plan and write the card; no network")
    p.add_argument(
        "--with-quantized", action="store_true", help="also push RUN_DIR/quantized/<model>/<quantizer>/"
    )
    p.add_argument(
        "--with-adapter",
        action="store_true",
        help="a LoRA run: also push its adapter, under adapter/ (PeftModel.from_pretrained(..., subfolder=))",
    )
    p.set_defaults(func=_push)
    return parser
