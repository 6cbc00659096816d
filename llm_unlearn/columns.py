"""The audit's columns: what happens to a model after release.

A column is one route a released model takes (a quantization format, a relearning check, ...): the
audit evaluates every model under every column and asks the column, never its family or method
string, everything it needs:

- `name` (the `quantizer` field of its results lines, kept under that key so old run folders read
  unchanged) and `config()`, recorded with every result (their `quantizer_config`);
- `has_codes`: whether its product carries integer codes (the weight diagnostics compare them);
- `is_format`: a precision or format the model ships in (a quantizer: the report's bits axis), or a
  change made to the model (relearning), evaluated at full precision;
- `at_full_precision`: whether its cells are the full-precision model (`fp`, a relearned model);
- `route`: `shipped` (a format or precision the model is released in: `fp`, quantizers, casts) or
  `attack` (a cheap step someone takes after release to bring the knowledge back: relearning,
  pruning, adversarial calibration, in-context probing); the verdict takes the worst column of each;
- `kernels`: the real-kernel backend that evaluates its cells under `evaluate_with: kernels`, by the
  name it is registered under in `llm_unlearn.kernels` (None: simulated only);
- `stale(recorded)`: whether a results line recorded earlier must be computed again;
- `context(ctx)` and `evaluates(metric)`: the evaluation context its cells are asked in (the
  audit's own, unless the column changes what the model is asked: in-context probing) and which
  metrics it has cells for (as shipped every one, under attack the forget metrics: the gate's
  question there is only whether the forget set comes back);
- `needs_calibration`, `check_model(model)`, `check_kernels()`, `kernel_runtime`: what a recipe
  checks before anything is built (calibration text, the model's shapes, a kernel backend).

How a column makes and caches its product (codes for a quantizer, a relearned checkpoint) is the
audit's (`audit/columns.py`). Each kind of column registers its class here (`register_column`), so
a report can tell, from a recorded configuration alone, which kind made a column (`column_kind`).
A kind that a recipe's `quantize:` list names also registers a factory for its names' family
(`register_column_family`: the first `-`-separated word, `rtn` in `rtn-w4-g128`), so `get_column`
makes any column from its name; every quantizer family is one (`quant.register_quantizer`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from llm_unlearn.errors import UserError
from llm_unlearn.names import column_family  # the registry key: `names.json` is keyed by it too
from llm_unlearn.registry import Registry, UnknownNameError

C = TypeVar("C", bound="type[Column]")
F = TypeVar("F", bound="Callable[[str], Column]")
#: the evaluation context of a cell (`metrics.EvalContext`, a higher layer than this one)
Ctx = TypeVar("Ctx")


class Column(ABC):
    """One audit column; subclasses set the class attributes that differ from these defaults."""

    name: str
    #: the naming pattern of the kind's columns, shown to users who mistype a name
    pattern: ClassVar[str] = ""
    has_codes: ClassVar[bool] = False
    is_format: ClassVar[bool] = True
    at_full_precision: ClassVar[bool] = False
    kernels: ClassVar[str | None] = None
    route: ClassVar[str] = "shipped"
    #: its product is fitted to activations on calibration text (GPTQ, AWQ): the caller sets
    #: `calibration` first, and a recipe without calibration text is refused
    needs_calibration: ClassVar[bool] = False
    #: the calibration source its name fixes (`gptq-w4-g128@forget`: "forget"); None: the recipe's
    calibration_source: str | None = None
    #: under `evaluate_with: kernels`, what runs its cells where that is no transformers model
    #: (llama.cpp for gguf-*): lm_eval, which wraps a transformers model, cannot evaluate them
    kernel_runtime: ClassVar[str | None] = None

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything needed to reproduce the column; stored with every result."""

    def stale(self, recorded: Mapping[str, Any]) -> bool:
        """Whether a results line of this column recorded earlier must be computed again; by default
        a cell is computed once (a column's name fixes its settings)."""
        return False

    def check_model(self, model: Any) -> None:
        """Raise a one-line UserError if the column cannot be applied to `model` (a model on the meta
        device will do: only shapes are read), so a run refuses before it trains anything."""
        return None  # most columns take any shape

    def check_kernels(self) -> None:
        """Raise a one-line UserError if its own kernels (`evaluate_with: kernels`) cannot run here
        (their package is missing), so a recipe refuses before anything is built."""
        return None  # nothing to check for a column without a real-kernel backend

    def context(self, ctx: Ctx) -> Ctx:
        """The evaluation context (`metrics.EvalContext`) its cells are asked in: the audit's own,
        unless the column changes what the model is asked rather than the model."""
        return ctx

    def evaluates(self, metric: Any) -> bool:
        """Whether the column has a cell for `metric` (a registered `metrics.Metric`). As shipped,
        every metric: the released model keeps or loses its utility there. Under attack, the forget
        metrics alone: the gate asks only whether the forget set comes back, and whoever attacks a
        model keeps whatever utility the attack leaves, so its retain and utility cells would answer
        no question and cost as much as the forget cells (a column that changes what only some
        metrics ask, in-context shots, narrows this further)."""
        return metric.forget or self.route_of(self.config()) == "shipped"

    @classmethod
    def claims(cls, config: Mapping[str, Any]) -> bool:
        """Whether a recorded configuration (a results line's `quantizer_config`) is this kind's."""
        return False

    @classmethod
    def route_of(cls, config: Mapping[str, Any]) -> str:
        """The route of the column that recorded `config`: the kind's, unless its settings make it
        an attack (a quantizer calibrated on forget text)."""
        return cls.route


#: the verdict's groups of columns, in the order reports show them
ROUTES = ("shipped", "attack")

COLUMN_KINDS: Registry[type[Column]] = Registry("column kind")


def register_column(kind: str) -> Callable[[C], C]:
    """Register a kind of column (its class) under `kind`."""
    return COLUMN_KINDS.register(kind)  # type: ignore[return-value]


#: factories `name -> Column` by the family of the names they make (`column_family`)
COLUMN_FAMILIES: Registry[Callable[[str], Column]] = Registry("column")


def register_column_family(family: str) -> Callable[[F], F]:
    """Register a factory `name -> Column` for every column name `family` or `family-...`; its
    `pattern` attribute, if any, is what a user who mistypes a name is shown."""
    return COLUMN_FAMILIES.register(family)  # type: ignore[return-value]


def get_column(name: str) -> Column:
    """The column called `name` (a quantizer, a cast, an in-context probe, ...); a malformed or
    unknown name raises a one-line error with the known patterns (the message quantizer names have
    always had: `quantize:` is where a recipe lists them)."""
    if column_family(name) not in COLUMN_FAMILIES:
        raise UnknownNameError(f"unknown quantizer {name!r}; known: {known_columns()}")
    try:
        return COLUMN_FAMILIES.get(column_family(name))(name)
    except UserError:
        raise
    except ValueError as err:  # a malformed name (`gptq-w5`) is the user's to fix, wherever it was typed
        raise UserError(str(err)) from None


def known_columns() -> str:
    """Every registered family's naming pattern (its name where it has none), for messages."""
    return ", ".join(getattr(COLUMN_FAMILIES.get(f), "pattern", f) or f for f in COLUMN_FAMILIES)


def column_kind(config: Mapping[str, Any]) -> type[Column] | None:
    """The registered kind that claims a recorded configuration; None for one no kind knows."""
    for kind in COLUMN_KINDS:
        if COLUMN_KINDS.get(kind).claims(config):
            return COLUMN_KINDS.get(kind)
    return None


def is_format(config: Mapping[str, Any]) -> bool:
    """Whether the column that recorded `config` is a precision or format the model ships in (a
    configuration no registered kind claims counts as one, as every column but relearning did)."""
    kind = column_kind(config)
    return True if kind is None else kind.is_format


def route(config: Mapping[str, Any]) -> str:
    """`shipped` or `attack` (`ROUTES`) for the column that recorded `config`; a configuration no
    registered kind claims is a format the model ships in."""
    kind = column_kind(config)
    return "shipped" if kind is None else kind.route_of(config)
