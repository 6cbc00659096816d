"""The quantizer registry.

A quantizer name is a family and its settings, `rtn-w4-g128-asym`: the family (`rtn`) is the
registry key and its factory parses the rest, so the same quantizer is named the same way in
recipes, results and reports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from torch import nn

from llm_unlearn.registry import Registry, UnknownNameError


class Quantizer(ABC):
    """Turns a model into its quantized variant, in place, for evaluation."""

    name: str
    #: the family's naming pattern, shown to users who mistype a name
    pattern: str = ""

    @abstractmethod
    def quantize_model(self, model: nn.Module) -> nn.Module:
        """Quantize `model` in place and return it, ready for a forward pass on CPU."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything needed to reproduce the quantization; stored with every result."""


QUANTIZER_FAMILIES: Registry[Callable[[str], Quantizer]] = Registry("quantizer")


def register_quantizer(family: str) -> Callable[[Callable[[str], Quantizer]], Callable[[str], Quantizer]]:
    """Register a factory `name -> Quantizer` for every name `family` or `family-...`."""
    return QUANTIZER_FAMILIES.register(family)


def get_quantizer(name: str) -> Quantizer:
    """The quantizer called `name`; a malformed or unknown name raises with the known patterns."""
    family = name.split("-", 1)[0]
    if family not in QUANTIZER_FAMILIES:
        raise UnknownNameError(f"unknown quantizer {name!r}; known: {known_quantizers()}")
    return QUANTIZER_FAMILIES.get(family)(name)


def known_quantizers() -> str:
    return ", ".join(getattr(QUANTIZER_FAMILIES.get(f), "pattern", f) or f for f in QUANTIZER_FAMILIES)
