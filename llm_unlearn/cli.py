"""`llm-unlearn`: a thin command line over the Python API.

Every user error (recipe, data, model, unknown name) is printed as one line on stderr with
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.resources import files
from pathlib import Path

import yaml

from llm_unlearn.errors import UserError
from llm_unlearn.registry import UnknownNameError

SUBCOMMANDS = ("run", "check", "demo", "evaluate", "report")


def demo_recipe() -> Path:
    return Path(str(files("llm_unlearn") / "recipes" / "demo.yaml"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, UnknownNameError) as err:
        print(f"llm-unlearn: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from llm_unlearn.pipeline import run
    from llm_unlearn.recipe import load_recipe

    out = run(load_recipe(args.recipe, args.set))
    print(f"results: {out / 'results.jsonl'}\nreport:  {out / 'report.md'}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from llm_unlearn.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    print(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    args.recipe = demo_recipe()
    return _run(args)


def _evaluate(args: argparse.Namespace) -> int:
    from llm_unlearn.data.corpora import load_muse
    from llm_unlearn.metrics import METRICS, EvalContext, evaluate, required_splits
    from llm_unlearn.models import load_model, load_tokenizer

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for name in names:
        METRICS.get(name)
    corpus = load_muse(args.data, required_splits(names))
    ctx = EvalContext(
        tokenizer=load_tokenizer(args.model, field="--model"),
        corpus=corpus,
        batch_size=args.batch_size,
        privleak_reference_auc=args.reference_auc,
        limit=args.limit,
    )
    results = evaluate(load_model(args.model, field="--model"), ctx, names)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    for name, result in results.items():
        print(f"{name}: {result['agg_value']:.2f}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from llm_unlearn.audit.report import write_report

    if not (args.run_dir / "results.jsonl").is_file():
        raise UserError(f"{args.run_dir}: no results.jsonl here; give the folder a run wrote")
    print(write_report(args.run_dir))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-unlearn", description=__doc__.splitlines()[0])
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

    recipe_command("run", _run, "unlearn, quantize, evaluate and report, as the recipe says")
    recipe_command("check", _check, "validate a recipe and print it resolved, without running it")
    recipe_command("demo", _demo, "the offline demo audit (recipes/demo.yaml)", with_recipe=False)

    p = sub.add_parser("evaluate", help="MUSE metrics of one local model on one MUSE-layout dataset")
    p.add_argument("--model", required=True, help="model folder (or Hub id) with its tokenizer")
    p.add_argument("--data", required=True, help="MUSE-layout folder, Hub id, or 'demo'")
    p.add_argument("--metrics", default="verbmem,knowmem_forget,knowmem_retain,privleak")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--reference-auc", type=float, help="the retrain model's AUC, PrivLeak's reference")
    p.add_argument("--limit", type=int, help="examples per metric (smoke runs only)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("report", help="rewrite report.md of a run folder from its results.jsonl")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_report)
    return parser
