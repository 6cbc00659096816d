"""CNN recipes: one YAML file -> one validated `CNNRecipe` (`llm-unlearn cnn RECIPE`).

Same conventions as `llm_unlearn.recipe`: every mistake is a one-line `RecipeError` naming the
field path and what is allowed.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llm_unlearn.cnn.data import LOADERS
from llm_unlearn.cnn.loop import TrainSettings
from llm_unlearn.cnn.methods import METHODS, SCRATCH_METHODS
from llm_unlearn.cnn.models import ARCHS
from llm_unlearn.recipe import distinct_run_names, registered, validate_model
from llm_unlearn.recipe_file import CNN_RECIPE_SHAPE, read_recipe_file

OPTION_FIELDS = ("saliency_ratio", "code_compat", "agr_batches", "alpha", "scope")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    source: Annotated[str, registered(LOADERS)] = Field(
        description="cifar10, cifar100, svhn, fashion_mnist, digits (embedded) or mnist."
    )
    path: Path | None = Field(
        default=None, description="Folder of the archive files (cifar/svhn; fashion_mnist)."
    )
    forget_ratio: float | None = Field(default=0.1, gt=0, lt=1, description="Random forget share of train.")
    forget_classes: tuple[int, ...] | None = Field(default=None, description="Forget these whole classes.")
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="Held out of train (45k/5k on CIFAR).")
    max_train: int | None = Field(
        default=None, ge=10, description="Subsample train (smoke runs, small CPUs)."
    )
    max_test: int | None = Field(default=None, ge=10, description="Subsample test.")
    downsample: int = Field(default=1, ge=1, le=8, description="Average-pool images by this factor.")
    augment: Literal["none", "crop", "crop_flip"] = "none"


class ModelSection(_Section):
    arch: Annotated[str, registered(ARCHS)] = Field(
        default="resnet18", description="resnet18 or mobilenetv2."
    )
    width: float = Field(default=64, gt=0, description="ResNet base channels (64) or MobileNetV2 multiplier.")
    weight_bits: int = Field(default=4, ge=2, le=32, description="LSQ weight bits; 32 = full precision.")
    act_bits: int = Field(default=4, ge=2, le=32, description="LSQ activation bits; 32 = full precision.")
    full_precision_ends: bool = Field(default=True, description="Keep first conv and classifier unquantized.")


class OptimSection(_Section):
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    batch_size: int = Field(default=256, ge=2)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "constant"


class MethodSection(OptimSection):
    name: str = Field(description="ft, ga, rl, salun, qmul or oeu.")
    label: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.+-]+$", description="Row name; default: name."
    )
    saliency_ratio: float | None = Field(
        default=None, gt=0, le=1, description="salun: share of weights kept."
    )
    code_compat: bool | None = Field(default=None, description="qmul: the public code's Similar Labels.")
    agr_batches: int | None = Field(
        default=None, ge=1, description="qmul: batches per gradient-norm estimate."
    )
    alpha: float | None = Field(default=None, ge=0, le=1, description="oeu: projection strength α.")
    scope: Literal["layer", "global"] | None = Field(
        default=None, description="oeu: 'global' is the ablation."
    )

    @field_validator("name")
    @classmethod
    def _known_method(cls, name: str) -> str:
        if name in SCRATCH_METHODS:
            raise ValueError(
                f"{name!r} always runs (configure it under {name}:); list unlearning methods here"
            )
        METHODS.get(name)
        return name

    @model_validator(mode="after")
    def _options_of_this_method(self) -> MethodSection:
        accepted = inspect.signature(METHODS.get(self.name)).parameters
        for option in OPTION_FIELDS:
            if getattr(self, option) is not None and option not in accepted:
                raise ValueError(f"{option} is not an option of {self.name!r}")
        return self

    @property
    def run_name(self) -> str:
        if self.label:
            return self.label
        return self.name + ("+global" if self.scope == "global" else "")

    def options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in OPTION_FIELDS if getattr(self, k) is not None}


class OutputSection(_Section):
    dir: Path = Field(description="Run folder: checkpoints/, results.json, ag_table.md.")


class CNNRecipe(_Section):
    name: str
    seed: int = 0
    threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads; 1 suits tiny models on a shared machine."
    )
    data: DataSection
    model: ModelSection = ModelSection()
    original: OptimSection = Field(description="Training the original (QAT) model from scratch on train.")
    retrain: OptimSection = Field(description="Training the Retrain reference from scratch on retain.")
    methods: tuple[MethodSection, ...] = Field(min_length=1)
    output: OutputSection

    @model_validator(mode="after")
    def _forget_set(self) -> CNNRecipe:
        if self.data.forget_classes and "forget_ratio" in self.data.model_fields_set:
            raise ValueError("data: give forget_ratio or forget_classes, not both")
        return self

    @model_validator(mode="after")
    def _distinct_run_names(self) -> CNNRecipe:
        distinct_run_names([m.run_name for m in self.methods], "methods")
        return self

    def settings(self, section: OptimSection) -> TrainSettings:
        return TrainSettings(
            epochs=section.epochs,
            lr=section.lr,
            batch_size=section.batch_size,
            momentum=section.momentum,
            weight_decay=section.weight_decay,
            schedule=section.schedule,
            augment=self.data.augment,
            seed=self.seed,
        )


def load_cnn_recipe(path: str | Path, overrides: list[str] = ()) -> CNNRecipe:
    """Read, override (`a.b=value`) and validate a CNN recipe; problems raise a `RecipeError`."""
    return validate_cnn_recipe(read_recipe_file(path, overrides, CNN_RECIPE_SHAPE), where=str(path))


def validate_cnn_recipe(data: dict[str, Any], where: str = "recipe") -> CNNRecipe:
    return validate_model(CNNRecipe, data, where)
