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
- `stale(recorded)`: whether a results line recorded earlier must be computed again.

How a column makes and caches its product (codes for a quantizer, a relearned checkpoint) is the
audit's (`audit/columns.py`). Each kind of column registers its class here (`register_column`), so
a report can tell, from a recorded configuration alone, which kind made a column (`column_kind`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from llm_unlearn.registry import Registry

C = TypeVar("C", bound="type[Column]")


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

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything needed to reproduce the column; stored with every result."""

    def stale(self, recorded: Mapping[str, Any]) -> bool:
        """Whether a results line of this column recorded earlier must be computed again; by default
        a cell is computed once (a column's name fixes its settings)."""
        return False

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
