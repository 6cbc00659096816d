"""Recipes: one YAML file -> one validated `Recipe`, the only way a run is configured.

Every mistake a user can make in a recipe is raised here as a `RecipeError` whose one-line
message names the field path and what is allowed; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from transformers import TrainingArguments

from llm_unlearn.columns import column_family, get_column
from llm_unlearn.data.benchmark import detect_benchmark
from llm_unlearn.data.corpora import DEMO, DEMO_QUICK
from llm_unlearn.data.tofu import FORGET_SPLITS, role_config
from llm_unlearn.data.wmdp import check_corpus_split
from llm_unlearn.methods import METHODS
from llm_unlearn.metrics import METRICS, benchmark_defaults, benchmark_metrics
from llm_unlearn.metrics.bootstrap import CONFIDENCE, RESAMPLES, SEED
from llm_unlearn.modifiers import Modifier, Section, modifiers
from llm_unlearn.quant import get_quantizer
from llm_unlearn.recipe_file import RecipeError, quote, read_unlearning_recipe
from llm_unlearn.registry import Registry
from llm_unlearn.runfolder import (
    GRID_ALIGNED,
    LEGACY_GRID,
    NAME_PATTERN,
    NO_TARGET,
    target_label,
)
from llm_unlearn.terms import TERMS
from llm_unlearn.unlearning_config import UnlearningConfig

# Set by the method section or by the run itself, so a `train:` entry would be silently ignored:
# every field UnlearningConfig adds to TrainingArguments, and the output folder.
RESERVED_TRAIN_FIELDS = {"output_dir"} | {f.name for f in dataclasses.fields(UnlearningConfig) if f.init} - {
    f.name for f in dataclasses.fields(TrainingArguments)
}


ModelT = TypeVar("ModelT", bound=BaseModel)


def registered(registry: Registry) -> AfterValidator:
    """A field validator: the value must be a name `registry` knows (its error lists them)."""

    def check(name: str) -> str:
        registry.get(name)
        return name

    return AfterValidator(check)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSection(_Section):
    """A LoRA adapter (peft's `LoraConfig`): each adapted weight W stays frozen and acts as
    W + (alpha / r)·B·A, with A (r × in) and B (out × r, zero at the start) the only trained weights."""

    r: int = Field(default=8, ge=1, description="Adapter rank.")
    alpha: int = Field(default=16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    target_modules: str | tuple[str, ...] = Field(
        default="all-linear",
        description="Module names to adapt, or 'all-linear' (every Linear but the head).",
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter's input.")


def _home(path: str | None) -> str | None:
    # `~/...` in a recipe means the user's home, as in a shell
    return str(Path(path).expanduser()) if path and path.startswith("~") else path


def _renamed_target(label: Any) -> Any:
    # recipe.yaml of an older run folder names the grid-aligned target `grid`
    return GRID_ALIGNED if label == LEGACY_GRID else label


class ModelSection(_Section):
    target: Annotated[str, AfterValidator(_home)] = Field(
        description="The model to unlearn: 'demo', 'demo_quick' (the quick demo's target), a local "
        "checkpoint folder or a Hub id."
    )
    name: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The target's label in results, report and verdict (and its models' folders, "
        "RUN@NAME), e.g. released-4bit for a target released on a low-bit grid; default: natural when "
        "the recipe unlearns it or sets grid_align (it is then the one trained normally), else target.",
    )
    gguf_file: str | None = Field(
        default=None,
        description="Read the target from this GGUF file in `target` (e.g. SmolLM2-135M-Instruct.Q4_1.gguf); "
        "converted once to a float32 checkpoint holding the file's dequantized weights, cached.",
    )
    retrain: Annotated[str | None, AfterValidator(_home)] = Field(
        default=None,
        description="A model trained without the forget set (the ideal): 'demo', a folder or a Hub id.",
    )
    grid_align: str | None = Field(
        default=None,
        description=(
            "Also audit a 'grid-aligned' copy of the target whose Linear weights are already on this "
            "quantizer's grid, as when a model is released as dequantized 4-bit weights (e.g. rtn-w4-g32)."
        ),
    )

    lora: LoraSection | None = Field(
        default=None, description="Unlearn a LoRA adapter instead of all weights; merged before quantizing."
    )
    allow_pickle: bool = Field(
        default=False,
        description="Accept checkpoints whose weights are only pickles (pytorch_model.bin): loading a pickle "
        "can run code, so only for files you trust; each is converted once to a cached safetensors copy.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run the Python code of a checkpoint whose architecture is its own (config.json's "
        "auto_map, a model_type transformers does not have): transformers' trust_remote_code, for the "
        "target, retrain and every model audited; only for code you trust. Recorded in certificate.json.",
    )

    @field_validator("name")
    @classmethod
    def _not_another_row(cls, name: str | None) -> str | None:
        if name in ("retrain", NO_TARGET, GRID_ALIGNED, LEGACY_GRID):
            raise ValueError(f"{name!r} labels other rows of the audit; choose another name")
        return name

    @field_validator("retrain")
    @classmethod
    def _not_the_quick_target(cls, retrain: str | None) -> str | None:
        if retrain == DEMO_QUICK:
            raise ValueError(f"{DEMO_QUICK!r} is the quick demo's target; its retrain model is {DEMO!r}")
        return retrain

    @field_validator("grid_align")
    @classmethod
    def _known_quantizer(cls, name: str | None) -> str | None:
        if name is not None:
            get_quantizer(name)
        return name

    @field_validator("gguf_file")
    @classmethod
    def _gguf_name(cls, name: str | None) -> str | None:
        if name is not None and not name.endswith(".gguf"):
            raise ValueError(f"{name!r} is not a .gguf file name (the file inside `target`)")
        return name


class DataSection(_Section):
    source: Annotated[str, AfterValidator(_home)] = Field(
        default="demo",
        description="'demo', 'demo_tofu', 'demo_wmdp', a MUSE-, TOFU- or WMDP-layout folder, or a Hub id.",
    )
    benchmark: Literal["auto", "muse", "tofu", "wmdp"] = Field(
        default="auto",
        description="The source's layout; auto: TOFU for demo_tofu, TOFU files or a TOFU Hub id; WMDP for "
        "demo_wmdp, wmdp-* folders or cais/wmdp.",
    )
    template: Literal["plain", "llama2", "llama3"] = Field(
        default="plain",
        description="TOFU: the chat format the models were fine-tuned in (plain = Question:/Answer: lines).",
    )
    forget_split: str = Field(
        default="forget",
        description="MUSE: a raw split; TOFU: forget01/05/10; WMDP: corpora (bio-forget-corpus, "
        "cyber-forget-corpus, or .jsonl files), comma-separated.",
    )
    retain_split: str = Field(
        default="retain1",
        description="MUSE: a raw split; TOFU: the paired retain99/95/90; WMDP: corpora (wikitext, "
        "bio-retain-corpus, cyber-retain-corpus, or .jsonl files), comma-separated.",
    )
    max_length: int = Field(default=128, ge=8, description="Tokens per training window.")

    @model_validator(mode="before")
    @classmethod
    def _tofu_defaults(cls, data: Any) -> Any:
        # TOFU's usual setting, forget10 with its retain90, unless the recipe names another
        if isinstance(data, dict) and _data_kind(data) == "tofu":
            data = {"forget_split": "forget10", **data}
            if data["forget_split"] in FORGET_SPLITS:  # else the after-validator names the mistake
                data.setdefault("retain_split", role_config("retain", data["forget_split"]))
        return data

    @model_validator(mode="before")
    @classmethod
    def _wmdp_defaults(cls, data: Any) -> Any:
        # the WMDP corpora open on the Hub (bio-forget-corpus is gated) unless the recipe names others
        if isinstance(data, dict) and _data_kind(data) == "wmdp":
            data = {"forget_split": "cyber-forget-corpus", "retain_split": "wikitext", **data}
        return data

    @model_validator(mode="after")
    def _wmdp_corpora(self) -> DataSection:
        if self.kind == "wmdp":
            for field in ("forget_split", "retain_split"):
                try:
                    check_corpus_split(getattr(self, field))
                except ValueError as error:
                    raise ValueError(f"{field}: {error}") from None
        return self

    @model_validator(mode="after")
    def _tofu_splits(self) -> DataSection:
        if self.kind != "tofu":
            return self
        if self.forget_split not in FORGET_SPLITS:
            raise ValueError(
                f"forget_split {self.forget_split!r} is not a TOFU forget split; "
                f"use {', '.join(FORGET_SPLITS)}"
            )
        paired = role_config("retain", self.forget_split)
        if self.retain_split != paired:
            raise ValueError(
                f"retain_split {self.retain_split!r} does not pair with {self.forget_split} (it would share "
                f"authors with it or leave some out); use {paired}"
            )
        return self

    @property
    def kind(self) -> str:
        """The benchmark the source holds: muse, tofu or wmdp."""
        return detect_benchmark(self.source, self.benchmark)


def _data_kind(data: dict[str, Any]) -> str:
    source = str(data.get("source", "demo"))
    return detect_benchmark(_home(source) or source, str(data.get("benchmark", "auto")))


class LmEvalSection(_Section):
    """General utility through lm-evaluation-harness (`pip install lm-eval`): the settings of its metric."""

    tasks: tuple[str, ...] = Field(
        min_length=1, description="lm-eval task names, e.g. mmlu, arc_easy, hellaswag."
    )
    limit: int | None = Field(
        default=None, ge=1, description="Examples per task (None = all); for smoke runs."
    )
    include_path: Annotated[str | None, AfterValidator(_home)] = Field(
        default=None, description="A folder of extra task YAML files (lm-eval's TaskManager include_path)."
    )
    num_fewshot: int = Field(default=0, ge=0, description="In-context examples per question.")


class StopSection(_Section):
    metric: Annotated[str, registered(METRICS)] = Field(
        description="Metric checked during unlearning: any registered metric."
    )
    below: float = Field(description="Stop once the metric is at or below this value.")
    every_n_steps: int = Field(default=25, ge=1)


class _MethodCommon(_Section):
    name: Annotated[str, registered(METHODS)] = Field(
        description=f"One of the registered methods ({', '.join(METHODS.names())})."
    )
    label: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="This run's name in results and report; default: name, plus "
        f"{' / '.join(m.suffix_label for m in modifiers())}.",
    )
    beta: float = Field(
        default=0.1,
        gt=0,
        description="β of every term of the method that has one: the inverse temperature of NPO, SimNPO "
        "and IdkDPO, the exponent of WGA's token weight; default: the term's own (0.1; WGA's 1); unused "
        "by the others (the baseline recipes state the papers' 0.1 for all six).",
    )
    retain_weight: float = Field(default=1.0, ge=0, description="λ, the weight of the retain term.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Overrides train.learning_rate for this method (SURE uses a larger one).",
    )
    targets: tuple[Annotated[str, BeforeValidator(_renamed_target)], ...] | None = Field(
        default=None,
        min_length=1,
        description="Which targets this method unlearns, by label: model.name (default natural) and "
        "grid-aligned (with model.grid_align); default: all.",
    )
    stop: StopSection | None = None

    @model_validator(mode="before")
    @classmethod
    def _term_beta(cls, data: Any) -> Any:
        """β not given: the default of the method's first term that declares one (WGA's exponent is
        1, not the inverse temperatures' 0.1), so a run records the β its terms trained with."""
        if not isinstance(data, dict) or "beta" in data or data.get("name") not in METHODS.names():
            return data
        terms = [TERMS.get(t).params.model_fields for t in METHODS.get(data["name"]).terms]
        declared = [fields["beta"].default for fields in terms if "beta" in fields]
        return {**data, "beta": declared[0]} if declared else data

    @model_validator(mode="after")
    def _modifiers_apply(self) -> _MethodCommon:
        for modifier in modifiers():
            modifier.check_method(METHODS.get(self.name), getattr(self, modifier.name))
        return self

    @model_validator(mode="after")
    def _term_parameters_apply(self) -> _MethodCommon:
        declared = METHODS.get(self.name).parameter_fields()
        for key in _TERM_FIELDS:
            if getattr(self, key) is not None and key not in declared:
                users = sorted(t for t in TERMS.names() if key in TERMS.get(t).params.model_fields)
                raise ValueError(
                    f"{key} is a parameter of the terms {', '.join(users)}; {self.name!r} has none"
                )
        for term in METHODS.get(self.name).terms:
            for key, info in TERMS.get(term).params.model_fields.items():
                if info.is_required() and getattr(self, key, None) is None:
                    raise ValueError(f"{self.name} needs `{key}`: {info.description}")
        try:  # what a term checks across its parameters (AltPO reads its alternates file)
            METHODS.get(self.name).resolve(self.term_values())
        except ValidationError as err:
            raise ValueError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    def term_values(self) -> dict[str, Any]:
        """The term parameters this section sets (β always); a term takes its own default for the others."""
        given = {key: getattr(self, key) for key in _TERM_FIELDS if getattr(self, key) is not None}
        return {"beta": self.beta, **given}

    @property
    def run_name(self) -> str:
        """The name of this run's checkpoint, results rows and report rows."""
        if self.label:
            return self.label
        return self.name + "".join(m.suffix(getattr(self, m.name)) for m in modifiers())

    def active_modifiers(self) -> list[tuple[Modifier, Section | None]]:
        """The modifiers this run uses, with their sections (None where a modifier is on by method)."""
        spec = METHODS.get(self.name)
        pairs = [(m, getattr(self, m.name)) for m in modifiers()]
        return [(m, section) for m, section in pairs if m.active(spec, section)]


def _term_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """Every parameter a method's terms declare, as an optional method field (None: the term's
    default); one name means one thing in every term. β is the common field above; a regulariser
    term is configured by the modifier that adds it (modifiers/)."""
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for name in TERMS.names():
        term = TERMS.get(name)
        for key, info in [] if term.regulariser else term.params.model_fields.items():
            if key in _MethodCommon.model_fields:
                continue
            if key in fields and fields[key][0] != info.annotation | None:
                raise TypeError(f"term parameter {key!r} has two types ({name} and another term)")
            optional = FieldInfo.merge_field_infos(info, default=None)
            fields[key] = (info.annotation | None, optional)
    return fields


def _modifier_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """One optional section per registered modifier (None: off), named as the modifier."""
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for modifier in modifiers():
        if modifier.name in _MethodCommon.model_fields or modifier.name in _TERM_FIELDS:
            raise TypeError(f"modifier {modifier.name!r} has the name of another method field")
        fields[modifier.name] = (
            modifier.section | None,
            Field(default=None, description=modifier.description),
        )
    return fields


_TERM_FIELDS = _term_fields()
#: a method entry: the common fields, every registered term's parameters and every registered
#: modifier's section, derived from the registries
MethodSection = create_model("MethodSection", __base__=_MethodCommon, **_TERM_FIELDS, **_modifier_fields())


class AuditedModelSection(_Section):
    """A checkpoint unlearned elsewhere (any tool), audited against `model.target` as it is."""

    name: str = Field(pattern=NAME_PATTERN, description="This model's name in results, report and verdict.")
    path: Annotated[str, AfterValidator(_home)] = Field(
        description="A checkpoint folder, a Hub id with an optional @revision (org/name@rev), a PEFT "
        "adapter folder or Hub id (its base from adapter_config.json, merged before quantizing), or a "
        ".gguf file (local, or org/name/FILE.gguf on the Hub)."
    )

    @field_validator("name")
    @classmethod
    def _not_a_reference(cls, name: str) -> str:
        if name in ("target", "retrain"):
            raise ValueError(f"{name!r} names the reference rows of the audit; choose another name")
        return name


class CalibrationSection(_Section):
    source: str = Field(
        default="generic",
        description="GPTQ/AWQ calibration text of the plain quantize names (the deployer's): generic "
        "(shipped, public domain), retain, forget, or a file. A name ending @generic, @retain or @forget "
        "(gptq-w4-g128@forget) calibrates on that text instead, with this section's samples, seq_len and "
        "seed; @forget, the adversary's explicit choice and audited as an attack, needs no allow_forget.",
    )
    samples: int = Field(default=32, ge=1, description="Calibration windows.")
    seq_len: int = Field(default=128, ge=8, description="Tokens per window.")
    seed: int = 0
    allow_forget: bool = Field(
        default=False, description="Allow source: forget (to measure its leak); @forget columns need none."
    )

    @model_validator(mode="after")
    def _forget_only_when_asked(self) -> CalibrationSection:
        if self.source == "forget" and not self.allow_forget:
            raise ValueError(
                "source 'forget' calibrates on the text being unlearned, which can leak it back; "
                "set allow_forget: true to measure that leak"
            )
        if (
            self.source not in ("generic", "retain", "forget")
            and not Path(self.source).expanduser().is_file()
        ):
            raise ValueError(f"source {self.source!r} is not generic, retain, forget or a text file")
        return self


#: a LoRA relearn entry's learning rate when it sets none: common for LoRA, 10× full fine-tuning's
LORA_LEARNING_RATE = 1e-4


class RelearnSection(_Section):
    """A relearning check: every audited model briefly fine-tuned on a seeded slice of raw text, then
    evaluated at full precision in an audit column of its own, beside the quantizers."""

    split: Literal["forget", "retain"] = Field(
        description="'forget': the relearning attack (a few steps on data.forget_split); 'retain': does "
        "benign fine-tuning on data.retain_split bring the forgotten knowledge back?"
    )
    samples: int = Field(
        default=4, ge=1, description="Texts drawn from the split (seeded), cut into data.max_length windows."
    )
    steps: int = Field(default=10, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(
        default=1e-5,
        gt=0,
        description="Constant, no warm-up or weight decay; 1e-5 is the MUSE baselines' unlearning rate. "
        f"With `lora` and no learning_rate set, {LORA_LEARNING_RATE:g}: an adapter starts from zero and "
        "trains few weights, so it takes a higher rate than full fine-tuning.",
    )
    batch_size: int = Field(default=4, ge=1, description="Windows per step (per process).")
    seed: int = Field(default=0, description="Seeds the slice and the order of its windows.")
    lora: LoraSection | None = Field(
        default=None,
        description="Relearn through a LoRA adapter on the frozen model (peft), as a user with one consumer "
        "GPU would (Łucki et al. 2024), instead of all weights: r, alpha, dropout, target_modules (default "
        "all-linear: every attention and MLP projection); `lora: {}` takes every default. Only the adapter "
        "is cached; it is merged into the model for evaluation.",
    )
    label: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The column's name in results and report; default relearn-<split>-<steps>, or "
        "relearn-lora-<split>-<steps> with `lora`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _lora_learning_rate(cls, data: Any) -> Any:
        # LoRA's own default rate when the entry sets none; full fine-tuning keeps the field's default
        if isinstance(data, dict) and data.get("lora") is not None and "learning_rate" not in data:
            return {**data, "learning_rate": LORA_LEARNING_RATE}
        return data

    @property
    def column(self) -> str:
        """The audit column of this check (the `quantizer` field of its results lines)."""
        kind = "relearn-lora" if self.lora is not None else "relearn"
        return self.label or f"{kind}-{self.split}-{self.steps}"


#: the verdict bands' defaults, in percent of recovery (audit/stats.py reads them from here)
HOLDS_BELOW, FAILS_FROM = 25.0, 50.0


class VerdictSection(_Section):
    """The release verdict of each forget-metric recovery (`audit/stats.py`) and its bootstrap."""

    holds_below: float = Field(
        default=HOLDS_BELOW,
        gt=0,
        lt=100,
        description="'holds' when the whole recovery interval is below this percentage.",
    )
    fails_from: float = Field(
        default=FAILS_FROM,
        gt=0,
        le=100,
        description="'fails' when the whole recovery interval is at or above this percentage.",
    )
    resamples: int = Field(
        default=RESAMPLES, ge=100, le=100_000, description="Bootstrap resamples of every interval."
    )
    confidence: float = Field(
        default=CONFIDENCE, gt=0, lt=1, description="Coverage of every interval (0.95 = 95 %)."
    )
    seed: int = Field(default=SEED, ge=0, description="Seeds the bootstrap resamples.")
    metrics: tuple[str, ...] | None = Field(
        default=None,
        min_length=1,
        description="The forget metrics whose cells gate the release (`--fail-above`); default: every "
        "forget metric the recipe evaluates. The others keep their verdicts in the report.",
    )

    @field_validator("metrics")
    @classmethod
    def _forget_metrics(cls, metrics: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in metrics or ():
            if not METRICS.get(name).forget:
                forget = ", ".join(n for n in METRICS.names() if METRICS.get(n).forget)
                raise ValueError(f"{name!r} is not a forget metric; the gate reads forget metrics ({forget})")
        return metrics

    @model_validator(mode="after")
    def _ordered(self) -> VerdictSection:
        if self.fails_from <= self.holds_below:
            raise ValueError(f"fails_from ({self.fails_from}) must be above holds_below ({self.holds_below})")
        return self


class OutputSection(_Section):
    dir: Annotated[Path, AfterValidator(Path.expanduser)] = Field(
        description="Run folder: checkpoints, results.jsonl, report.md."
    )


class Recipe(_Section):
    name: str
    model: ModelSection
    data: DataSection = DataSection()
    method: tuple[MethodSection, ...] = Field(
        default=(), description="Unlearning runs of the target; none in a recipe that only audits `models`."
    )
    models: tuple[AuditedModelSection, ...] = Field(
        default=(), description="Checkpoints unlearned elsewhere, audited against model.target as they are."
    )
    train: dict[str, Any] = Field(default_factory=dict, description="Any TrainingArguments field.")
    quantize: tuple[str, ...] = ("fp",)
    calibration: CalibrationSection = CalibrationSection()
    evaluate: tuple[str, ...] = benchmark_defaults("muse")
    evaluate_with: Literal["simulated", "kernels"] = Field(
        default="simulated",
        description="simulated: every quantized cell is its dequantized weights (float32 on the CPU, the "
        "checkpoint's dtype on a GPU); kernels: "
        "bitsandbytes cells run on bitsandbytes' own layers (Linear4bit / Linear8bitLt), gguf cells on "
        "llama.cpp's own inference (llama-cpp-python).",
    )
    device_map: Literal["auto"] | None = Field(
        default=None,
        description="auto: spread each audited model over every visible GPU (one that a single GPU does "
        "not hold; a single process only); default: each process evaluates on its own device.",
    )
    relearn: tuple[RelearnSection, ...] = Field(
        default=(),
        description="Relearning checks, each one audit column beside the quantizers; none by default.",
    )
    verdict: VerdictSection = VerdictSection()
    lm_eval: LmEvalSection | None = Field(
        default=None, description="The tasks of the lm-evaluation-harness metric."
    )
    output: OutputSection

    @field_validator("method", "models", "relearn", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("quantize")
    @classmethod
    def _known_quantizers(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            get_column(name)  # a quantizer or any other registered column (an in-context probe)
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
                raise ValueError(f"{key}: {err.errors()[0]['msg']} (got {quote(value)})") from None
            _check_range(key, checked[key])
        return checked

    @model_validator(mode="before")
    @classmethod
    def _benchmark_metrics_by_default(cls, data: Any) -> Any:
        # the default metrics are the benchmark's own (the registry's default_rank): MUSE's four, TOFU's
        # five, WMDP's bio, cyber and MMLU
        if isinstance(data, dict) and "evaluate" not in data:
            section = data.get("data") if isinstance(data.get("data"), dict) else {}
            kind = _data_kind(section)
            if kind != "muse":
                data = {**data, "evaluate": benchmark_defaults(kind)}
        return data

    @model_validator(mode="after")
    def _metrics_fit_the_benchmark(self) -> Recipe:
        kind = self.data.kind
        for name in self.evaluate:
            metric = METRICS.get(name)
            if metric.benchmark is not None and metric.benchmark != kind:
                raise ValueError(
                    f"evaluate: {name} reads {metric.benchmark.upper()} data but data.source is a "
                    f"{kind.upper()} benchmark; use {', '.join(benchmark_metrics(kind))}"
                )
            if metric.settings is not None and getattr(self, metric.settings, None) is None:
                described = type(self).model_fields[metric.settings].description
                raise ValueError(f"evaluate: {name} needs an {metric.settings} section ({described})")
        return self

    @model_validator(mode="after")
    def _columns_have_cells(self) -> Recipe:
        # a column that changes what only some metrics ask (in-context shots) would be empty
        for name in self.quantize:
            column = get_column(name)
            if not any(column.evaluates(METRICS.get(m)) for m in self.evaluate):
                takes = [m for m in METRICS.names() if column.evaluates(METRICS.get(m))]
                raise ValueError(
                    f"quantize: {name} has cells for none of evaluate's metrics; evaluate one of "
                    f"{', '.join(takes)} or leave {name} out"
                )
        return self

    @model_validator(mode="after")
    def _kernels_can_run(self) -> Recipe:
        # each quantizer says what its own kernels need: a missing backend is one line now, not mid-audit
        if self.evaluate_with != "kernels":
            return self
        for name in self.quantize:
            column = get_column(name)
            column.check_kernels()
            runtime = column.kernel_runtime
            for metric in self.evaluate if runtime is not None else ():
                if METRICS.get(metric).transformers_only:
                    raise ValueError(
                        f"evaluate_with: kernels: {metric} wraps a transformers model, and {runtime} runs "
                        f"{name}; use simulated or move {metric} to a recipe without "
                        f"{column_family(name)}-* quantizers"
                    )
        return self

    @model_validator(mode="after")
    def _something_to_audit(self) -> Recipe:
        if not self.method and not self.models:
            raise ValueError(
                "nothing to audit: give a method section (unlearn the target) or a models list "
                "(checkpoints unlearned elsewhere)"
            )
        return self

    @model_validator(mode="after")
    def _distinct_run_names(self) -> Recipe:
        distinct_run_names([m.run_name for m in self.method], "method")
        distinct_run_names([m.name for m in self.models], "models")
        runs = {m.run_name for m in self.method}
        for i, entry in enumerate(self.models):
            if entry.name in runs:
                raise ValueError(f"models.{i}: {entry.name!r} is also a method run's name; rename one")
        return self

    @model_validator(mode="after")
    def _distinct_columns(self) -> Recipe:
        columns = [r.column for r in self.relearn]
        for i, column in enumerate(columns):
            if column in columns[:i] or column in self.quantize:
                other = "a quantizer" if column in self.quantize else "another relearn entry"
                raise ValueError(
                    f"relearn.{i}: column {column!r} is also {other}'s; give this entry a distinct label"
                )
        return self

    @model_validator(mode="after")
    def _modifiers_fit_the_recipe(self) -> Recipe:
        # each modifier's refusals of the rest of the recipe (SURE with LoRA, OEU in fp16 or sharded)
        for modifier in modifiers():
            for i, method in enumerate(self.method):
                section = getattr(method, modifier.name)
                if modifier.active(METHODS.get(method.name), section):
                    modifier.check_recipe(self, i, section)
        return self

    @model_validator(mode="after")
    def _methods_read_the_data(self) -> Recipe:
        for i, method in enumerate(self.method):
            for term in METHODS.get(method.name).terms:
                readable = TERMS.get(term).benchmarks
                if readable is not None and self.data.kind not in readable:
                    raise ValueError(
                        f"method.{i}: {method.name} reads {' or '.join(readable)} data only, but data.source "
                        f"{self.data.source!r} is {self.data.kind}; use such a source (e.g. demo_tofu)"
                    )
        return self

    @model_validator(mode="after")
    def _gate_reads_evaluated_metrics(self) -> Recipe:
        missing = [m for m in self.verdict.metrics or () if m not in self.evaluate]
        if missing:
            raise ValueError(
                f"verdict.metrics names {', '.join(missing)}, which `evaluate` does not list; add it there"
            )
        return self

    @model_validator(mode="after")
    def _method_targets_exist(self) -> Recipe:
        for i, method in enumerate(self.method):
            for target in method.targets or ():
                if target == GRID_ALIGNED and self.model.grid_align is None:
                    raise ValueError(
                        f"method.{i}.targets asks for {target!r} but model.grid_align is not set"
                    )
                if target not in self.targets():
                    raise ValueError(
                        f"method.{i}.targets: {target!r} is not a target of this recipe; "
                        f"use {' or '.join(map(repr, self.targets()))}"
                    )
        return self

    @property
    def target_label(self) -> str:
        """The label of the user's target in results, report, verdict and folder names (`model.name`,
        else its default: `runfolder.target_label`)."""
        return target_label(self.model.name, bool(self.method), self.model.grid_align is not None)

    def targets(self, method: MethodSection | None = None) -> tuple[str, ...]:
        """The targets of the run, by label, or those `method` unlearns."""
        available = (self.target_label, GRID_ALIGNED) if self.model.grid_align else (self.target_label,)
        return method.targets if method is not None and method.targets else available


#: ranges TrainingArguments does not check; outside them a run fails late or trains nothing
TRAIN_RANGES: dict[str, tuple[str, float]] = {
    "learning_rate": (">", 0),
    "num_train_epochs": (">", 0),
    "per_device_train_batch_size": (">=", 1),
    "per_device_eval_batch_size": (">=", 1),
    "gradient_accumulation_steps": (">=", 1),
    "warmup_steps": (">=", 0),
    "weight_decay": (">=", 0),
    "max_grad_norm": (">=", 0),
    "logging_steps": (">", 0),
    "seed": (">=", 0),
}


def _check_range(key: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}: must be a finite number (got {value})")
    if key == "max_steps" and value != -1 and value < 1:
        raise ValueError(f"max_steps: must be -1 (use num_train_epochs) or >= 1 (got {value})")
    if key in TRAIN_RANGES and isinstance(value, int | float):
        op, bound = TRAIN_RANGES[key]
        if not (value > bound if op == ">" else value >= bound):
            raise ValueError(f"{key}: must be {op} {bound:g} (got {value})")


@cache
def _training_fields() -> dict[str, TypeAdapter]:
    hints = typing.get_type_hints(UnlearningConfig)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(UnlearningConfig) if f.init}


def distinct_run_names(names: list[str], section: str) -> None:
    """Refuse two runs of one recipe under one name: they would share a checkpoint and results."""
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"{section}.{i}: a second run named {name!r}; give one of them a distinct label")


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; any problem raises a one-line `RecipeError`."""
    return validate_recipe(read_unlearning_recipe(path, overrides), where=str(path))


def validate_recipe(data: dict[str, Any], where: str = "recipe") -> Recipe:
    return validate_model(Recipe, data, where)


def validate_model(model: type[ModelT], data: dict[str, Any], where: str) -> ModelT:
    """`model` validated from `data`; the first problem becomes a one-line `RecipeError`."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"{where}: {_one_line(err, model)}") from None


def _one_line(err: ValidationError, model: type[BaseModel]) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind, msg = first["type"], first["msg"]
    if kind == "extra_forbidden":
        msg = f"unknown field; allowed here: {', '.join(_allowed_fields(model, first['loc']))}"
    elif kind == "value_error":
        msg = str(first.get("ctx", {}).get("error", msg))
    elif kind == "missing":
        msg = "required field is missing"
    else:
        msg = f"{msg} (got {quote(first.get('input'))})"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{loc}: {msg}{suffix}" if loc else f"{msg}{suffix}"


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
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
