"""Recipes: one YAML file -> one validated `Recipe`, the only way a run is configured.

Every mistake a user can make in a recipe is raised here as a `RecipeError` whose one-line
message names the field path and what is allowed; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from llm_unlearn.errors import UserError
from llm_unlearn.methods import METHODS
from llm_unlearn.metrics import METRICS
from llm_unlearn.quant import get_quantizer
from llm_unlearn.trainer import UnlearningConfig

TARGETS = ("natural", "grid")
# Set by the method section or by the run itself, so a `train:` entry would be silently ignored.
RESERVED_TRAIN_FIELDS = {"output_dir", "forget_loss", "retain_loss", "retain_weight", "beta"}


class RecipeError(UserError):
    """A user-fixable recipe problem, one line: `where: field: what is wrong; what is allowed`."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    target: str = Field(description="The model to unlearn: 'demo', a local checkpoint folder or a Hub id.")
    retrain: str | None = Field(
        default=None,
        description="A model trained without the forget set (the ideal): 'demo', a folder or a Hub id.",
    )
    grid_align: str | None = Field(
        default=None,
        description=(
            "Also audit a 'grid' copy of the target whose Linear weights are already on this quantizer's "
            "grid, as when a model is released as dequantized 4-bit weights (e.g. rtn-w4-g32)."
        ),
    )

    @field_validator("grid_align")
    @classmethod
    def _known_quantizer(cls, name: str | None) -> str | None:
        if name is not None:
            get_quantizer(name)
        return name


class DataSection(_Section):
    source: str = Field(default="demo", description="'demo', a MUSE-layout folder, or a Hub id.")
    forget_split: str = "forget"
    retain_split: str = "retain1"
    max_length: int = Field(default=128, ge=8, description="Tokens per training window.")


class StopSection(_Section):
    metric: str = Field(description="Metric checked during unlearning, e.g. knowmem_forget.")
    below: float = Field(description="Stop once the metric is at or below this value.")
    every_n_steps: int = Field(default=25, ge=1)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str) -> str:
        METRICS.get(name)
        return name


class MethodSection(_Section):
    name: str = Field(
        description="One of the registered methods (ga, ga_gdr, ga_klr, npo, npo_gdr, npo_klr)."
    )
    beta: float = Field(default=0.1, gt=0, description="NPO's β.")
    retain_weight: float = Field(default=1.0, ge=0, description="λ, the weight of the retain term.")
    targets: tuple[Literal["natural", "grid"], ...] | None = Field(
        default=None, min_length=1, description="Which targets this method unlearns (default: all)."
    )
    stop: StopSection | None = None

    @field_validator("name")
    @classmethod
    def _known_method(cls, name: str) -> str:
        METHODS.get(name)
        return name


class OutputSection(_Section):
    dir: Path = Field(description="Run folder: checkpoints, results.jsonl, report.md.")


class Recipe(_Section):
    name: str
    model: ModelSection
    data: DataSection = DataSection()
    method: tuple[MethodSection, ...] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict, description="Any TrainingArguments field.")
    quantize: tuple[str, ...] = ("fp",)
    evaluate: tuple[str, ...] = ("verbmem", "knowmem_forget", "knowmem_retain", "privleak")
    output: OutputSection

    @field_validator("method", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("quantize")
    @classmethod
    def _known_quantizers(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            get_quantizer(name)
        # Every recovery ratio is relative to full precision, so `fp` is always audited, first.
        return ("fp", *(n for n in dict.fromkeys(names) if n != "fp"))

    @field_validator("evaluate")
    @classmethod
    def _known_metrics(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            METRICS.get(name)
        return names

    @field_validator("train")
    @classmethod
    def _training_arguments(cls, train: dict[str, Any]) -> dict[str, Any]:
        fields = _training_fields()
        checked = {}
        for key, value in train.items():
            if key in RESERVED_TRAIN_FIELDS:
                raise ValueError(f"{key!r} is set by the recipe's method/output sections, not by train")
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{key!r} is not a TrainingArguments field{hint}")
            try:
                checked[key] = fields[key].validate_python(value)
            except ValidationError as err:
                raise ValueError(f"{key}: {err.errors()[0]['msg']} (got {value!r})") from None
        return checked

    @model_validator(mode="after")
    def _grid_targets_need_grid(self) -> Recipe:
        for i, method in enumerate(self.method):
            if method.targets and "grid" in method.targets and self.model.grid_align is None:
                raise ValueError(f"method.{i}.targets asks for 'grid' but model.grid_align is not set")
        return self

    def targets(self, method: MethodSection | None = None) -> tuple[str, ...]:
        """The targets of the run, or those `method` unlearns."""
        available = TARGETS if self.model.grid_align else ("natural",)
        return method.targets if method is not None and method.targets else available

    def training_config(self, method: MethodSection, output_dir: Path) -> UnlearningConfig:
        spec = METHODS.get(method.name)
        settings = {"report_to": "none", "save_strategy": "no", **self.train}
        try:
            return UnlearningConfig(
                output_dir=str(output_dir),
                forget_loss=spec.forget_loss,
                retain_loss=spec.retain_loss,
                beta=method.beta,
                retain_weight=method.retain_weight,
                **settings,
            )
        except ValueError as err:  # TrainingArguments' own cross-field checks (e.g. bf16 without a GPU)
            raise RecipeError(f"train: {str(err).splitlines()[0]}") from None


@cache
def _training_fields() -> dict[str, TypeAdapter]:
    hints = typing.get_type_hints(UnlearningConfig)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(UnlearningConfig) if f.init}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (value parsed as YAML) to the raw recipe mapping."""
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.learning_rate=2e-4")
        node: Any = data
        *parents, leaf = path.split(".")
        for depth, key in enumerate(parents):
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
                continue
            if not isinstance(node, dict):
                raise RecipeError(f"--set {path}: {'.'.join(parents[:depth]) or 'recipe'} is not a section")
            node = node.setdefault(key, {})
        if isinstance(node, list) and leaf.isdigit() and int(leaf) < len(node):
            node[int(leaf)] = yaml.safe_load(raw)
        elif isinstance(node, dict):
            node[leaf] = yaml.safe_load(raw)
        else:
            raise RecipeError(f"--set {path}: {'.'.join(parents) or 'recipe'} is not a section")
    return data


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; any problem raises a one-line `RecipeError`."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with sections model, method, output, ...")
    data = apply_overrides(data, list(overrides))
    data.setdefault("name", path.stem)
    return validate_recipe(data, where=str(path))


def validate_recipe(data: dict[str, Any], where: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"{where}: {_one_line(err)}") from None


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind, msg = first["type"], first["msg"]
    if kind == "extra_forbidden":
        msg = f"unknown field; allowed here: {', '.join(_allowed_fields(first['loc']))}"
    elif kind == "value_error":
        msg = str(first.get("ctx", {}).get("error", msg))
    elif kind == "missing":
        msg = "required field is missing"
    else:
        msg = f"{msg} (got {first.get('input')!r})"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{loc}: {msg}{suffix}" if loc else f"{msg}{suffix}"


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        inner = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif inner:
            model = inner[0]
    return list(model.model_fields)
