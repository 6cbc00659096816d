"""mkdocs hook: the reference pages and the results tables, generated when the site is built.

A page asks for a generated block with a line `<!-- reference: NAME -->` (`REFERENCES`: every recipe
field from the pydantic models, every CLI command from its argparse parser, the metric registry,
the column families) and for a results table with `<!-- table: NAME -->` `<!-- /table -->`
(`eval/results_tables.py`, from the committed files in eval/results/). Nothing generated is
committed, so the site says what the code and the committed results say.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import llm_unlearn.audit.run  # noqa: F401  (the audit: it imports every column kind it evaluates)
from llm_unlearn.cli import _parser
from llm_unlearn.columns import COLUMN_KINDS
from llm_unlearn.metrics import METRICS
from llm_unlearn.quant.registry import QUANTIZER_FAMILIES
from llm_unlearn.recipe import Recipe
from llm_unlearn.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"^<!-- reference: (?P<name>[\w-]+) -->$", re.MULTILINE)
#: argparse wraps help to the terminal's width: a fixed one keeps the page the same everywhere
HELP_WIDTH = "100"


def _results_tables() -> types.ModuleType:
    """eval/results_tables.py, a script rather than a package module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("results_tables", ROOT / "eval" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(text: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _type_name(annotation: Any) -> str:
    """A field's type as a reader writes it: `int | None`, `tuple[str, ...]`, `LoraSection`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _sections(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models a field's type holds (a section, a list of them, an optional one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _sections(arg)


def _default(info: Any) -> str:
    if info.default_factory is not None:
        return f"`{info.default_factory()!r}`"
    if info.default is PydanticUndefined:
        return "required"
    if isinstance(info.default, BaseModel):
        return "its fields' defaults"
    return f"`{info.default!r}`"


def _field_rows(model: type[BaseModel], prefix: str) -> Iterator[list[str]]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        yield [
            f"`{path}`",
            _cell(_type_name(info.annotation)),
            _cell(_default(info)),
            _cell(info.description or ""),
        ]
        for section in _sections(info.annotation):
            yield from _field_rows(section, f"{path}.")


def recipe_reference(model: type[BaseModel] = Recipe) -> str:
    """One table per top-level recipe field: every field below it, its type, default and description."""
    out = []
    for name, info in model.model_fields.items():
        out += [f"## `{name}`", ""] + ([_cell(info.description), ""] if info.description else [])
        out += ["| field | type | default | description |", "|---|---|---|---|"]
        first = [f"`{name}`", _cell(_type_name(info.annotation)), _cell(_default(info)), ""]
        rows = [first] + [
            row for section in _sections(info.annotation) for row in _field_rows(section, f"{name}.")
        ]
        out += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    return "\n".join(out)


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """Every command's `--help`, as argparse prints it."""
    parser = parser or _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        out = ["```text", parser.format_help().rstrip(), "```", ""]
        for name, command in commands.choices.items():
            out += [f"## `llm-unlearn {name}`", "", "```text", command.format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(out)


def metric_reference(metrics: Registry = METRICS) -> str:
    """The metric registry: what each metric is called, its role, benchmark and scale."""
    out = [
        "| name | title | role | benchmark | unit | default | retrain reference |",
        "|" + "---|" * 7,
    ]
    for name in metrics:
        metric = metrics.get(name)
        row = [f"`{name}`", metric.title or name, metric.role, metric.benchmark or "any", metric.unit]
        row += ["yes" if metric.default_rank is not None else "", "yes" if metric.reference else ""]
        out.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    return "\n".join(out) + "\n"


def _summary(obj: object) -> str:
    return " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())


def column_reference() -> str:
    """The column kinds (`columns.COLUMN_KINDS`) and the quantizer families that name columns."""
    out = ["## Column kinds", "", "| kind | route | a format it ships in | full precision | codes | what |"]
    out.append("|---|---|---|---|---|---|")
    for kind in COLUMN_KINDS:
        cls = COLUMN_KINDS.get(kind)
        flags = ["yes" if value else "" for value in (cls.is_format, cls.at_full_precision, cls.has_codes)]
        out.append("| " + " | ".join([f"`{kind}`", cls.route, *flags, _cell(_summary(cls))]) + " |")
    out += ["", "## Column families", "", "| family | names | route | codes | kernels | what |"]
    out.append("|---|---|---|---|---|---|")
    for family in QUANTIZER_FAMILIES:
        factory: Callable = QUANTIZER_FAMILIES.get(family)
        row = [
            f"`{family}`",
            f"`{getattr(factory, 'pattern', '') or family}`",
            getattr(factory, "route", "shipped"),
        ]
        row += ["yes" if getattr(factory, "has_codes", True) else "", getattr(factory, "kernels", None) or ""]
        out.append("| " + " | ".join(_cell(cell) for cell in [*row, _summary(factory)]) + " |")
    return "\n".join(out) + "\n"


REFERENCES: dict[str, Callable[[], str]] = {
    "recipe": recipe_reference,
    "cli": cli_reference,
    "metrics": metric_reference,
    "columns": column_reference,
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs' page event: generated blocks and results tables in place of their markers."""
    markdown = REFERENCE.sub(lambda m: REFERENCES[m.group("name")](), markdown)
    return _results_tables().fill(markdown)
