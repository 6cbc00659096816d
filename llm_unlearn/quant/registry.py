"""The quantizer registry.

A quantizer name is a family and its settings, `rtn-w4-g128-asym`: the family (`rtn`) is the
registry key and its factory parses the rest, so the same quantizer is named the same way in
recipes, results and reports. A quantizer that fits its rounding to calibration text (GPTQ, AWQ)
may name that text after an `@`, `gptq-w4-g128@forget`: the column then calibrates on that source
whatever the recipe's calibration section says (the section is the deployer's choice, the suffix
an adversary's; calibrating on the forget set is the attack of quantizing with the text unlearned).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llm_unlearn.columns import Column, register_column, register_column_family
from llm_unlearn.columns import column_family as family  # a quantizer's family is its column family
from llm_unlearn.errors import UserError
from llm_unlearn.quant.calibration import SOURCES
from llm_unlearn.registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from llm_unlearn.quant.calibration import Calibration


def pack_codes(codes: torch.Tensor, levels: int) -> torch.Tensor:
    """`codes` flattened, two 4-bit codes a byte (low nibble first) where `levels` <= 16, else as
    uint8 (<= 256 levels) or int32; an odd count gets a zero nibble at the end."""
    flat = codes.reshape(-1)
    if levels > 16:
        return flat.to(torch.uint8 if levels <= 256 else torch.int32)
    flat = flat.to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_codes(packed: torch.Tensor, count: int, levels: int) -> torch.Tensor:
    """The first `count` codes of `pack_codes`'s output, as uint8 (int32 above 256 levels)."""
    if levels > 16:
        return packed[:count]
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(-1)[:count]


class WeightCodes:
    """The integer codes of one weight and the grid they index, for any quantizer.

    The weight (shape `shape`, row-major) is cut into groups of `group_size` consecutive
    elements; element k of group i stands for the value

        w'[i, k] = (levels[codes[i, k]] - zero[i]) * scale[i]

    `levels` is increasing: integers for uniform grids (RTN, GPTQ, AWQ, LLM.int8()), the
    normal-float or float table for NF4/FP4. `codes` [groups, group_size] indexes `levels`. The
    codes are held packed (`pack_codes`: two a byte up to 16 levels, one a byte up to 256), an
    eighth of a float32 weight at 4 bits, so the codes of a model being quantized stay small
    beside it (a 7B audit holds them all until its cell is written); reading `codes` unpacks them.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        levels: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor,
        shape: torch.Size,
    ) -> None:
        self.levels, self.scale, self.zero, self.shape = levels, scale, zero, torch.Size(shape)
        self.packed = pack_codes(codes, len(levels))

    @classmethod
    def from_packed(
        cls,
        packed: torch.Tensor,
        levels: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor,
        shape: torch.Size,
    ) -> WeightCodes:
        """Codes already packed by `pack_codes` (as a cell stores them), kept as they are."""
        codes = cls.__new__(cls)
        codes.levels, codes.scale, codes.zero, codes.shape = levels, scale, zero, torch.Size(shape)
        codes.packed = packed
        return codes

    @property
    def codes(self) -> torch.Tensor:
        """[groups, group_size], uint8 (int32 above 256 levels)."""
        return unpack_codes(self.packed, self.shape.numel(), len(self.levels)).reshape(len(self.scale), -1)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight the codes stand for, in `shape`."""
        values = self.levels.float()[self.codes.long()] - self.zero.float()[:, None]
        return (values * self.scale.float()[:, None]).reshape(self.shape)

    def normalized(self, w: torch.Tensor) -> torch.Tensor:
        """`w` on this grid's axis, x = w / scale + zero, per group: level k sits at x = levels[k]."""
        groups = w.detach().float().reshape(len(self.scale), -1)
        return groups / self.scale.float()[:, None] + self.zero.float()[:, None]


@register_column("quantizer")
class Quantizer(Column):
    """Turns a model into its quantized variant, in place, for evaluation: an audit column whose
    cells are cached as codes (`audit/cache.py`). A quantizer names its family's real-kernel backend
    in `kernels` (`llm_unlearn.kernels`), if it has one, and sets `has_codes` False where
    `quantize_with_codes` gives none. Recorded configurations no other kind claims are a quantizer's."""

    name: str
    has_codes = True
    #: what a quantizer that `needs_calibration` (GPTQ, AWQ) fits its rounding to
    calibration: Calibration | None = None
    #: False where the codes quantize rescaled weights (AWQ), so W_u - W_t is not on their grid
    codes_in_weight_basis: bool = True
    #: whether the files `save_artifacts` keeps hold the whole quantized model (llama.cpp's GGUF
    #: file): a cell then stores nothing else and is rebuilt from them (`load_artifacts`)
    artifacts_hold_the_model: bool = False
    #: whether `mean_step(model)` gives the mean step of a grid the weights alone fix (RTN): QUAIL's
    #: margin `auto` is half of it
    has_mean_step: bool = False

    @abstractmethod
    def quantize_model(self, model: nn.Module) -> nn.Module:
        """Quantize `model` in place and return it, ready for a forward pass on CPU."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything needed to reproduce the quantization; stored with every result."""

    def quantize_with_codes(self, model: nn.Module) -> dict[str, WeightCodes]:
        """Quantize `model` in place like `quantize_model` and return the codes of each quantized
        weight by module name; {} for quantizers without integer codes (`fp`)."""
        self.quantize_model(model)
        return {}

    def save_artifacts(self, folder: Path) -> None:
        """Keep, beside a saved quantized checkpoint in `folder`, what the last quantization wrote
        that the checkpoint does not hold (llama.cpp's GGUF file); nothing by default."""
        return None  # most quantizers leave nothing but the checkpoint

    def load_artifacts(self, folder: Path, model: nn.Module) -> dict[str, WeightCodes]:
        """Where `artifacts_hold_the_model`: give `model` (the source checkpoint) the quantized
        weights kept in `folder` and return their codes."""
        raise NotImplementedError(f"{self.name}: its artifacts hold no model")


QUANTIZER_FAMILIES: Registry[Callable[[str], Quantizer]] = Registry("quantizer")


def register_quantizer(family: str) -> Callable[[Callable[[str], Quantizer]], Callable[[str], Quantizer]]:
    """Register a factory `name -> Quantizer` for every name `family` or `family-...`: a quantizer
    and a column (`columns.get_column`) by the same name."""

    def add(factory: Callable[[str], Quantizer]) -> Callable[[str], Quantizer]:
        def column(name: str) -> Quantizer:  # through get_quantizer: a name's @source applies there too
            return get_quantizer(name)

        column.pattern = getattr(factory, "pattern", "")  # type: ignore[attr-defined]
        register_column_family(family)(column)
        return QUANTIZER_FAMILIES.register(family)(factory)

    return add


def get_quantizer(name: str) -> Quantizer:
    """The quantizer called `name`; a malformed or unknown name raises with the known patterns.

    `base@source` (`gptq-w4-g128@forget`) is the quantizer `base` with its calibration source fixed
    (`calibration_source`), for quantizers that calibrate only."""
    if family(name) not in QUANTIZER_FAMILIES:
        raise UnknownNameError(f"unknown quantizer {name!r}; known: {known_quantizers()}")
    base, _, source = name.partition("@")
    try:
        quantizer = QUANTIZER_FAMILIES.get(family(name))(base)
    except UserError:
        raise
    except ValueError as err:  # a malformed name (`gptq-w5`) is the user's to fix, wherever it was typed
        raise UserError(str(err)) from None
    if "@" not in name:
        return quantizer
    if not quantizer.needs_calibration:
        raise UserError(
            f"quantizer {name!r}: {base} reads no calibration text, so @{source} has nothing to choose; "
            f"drop @{source}"
        )
    if source not in SOURCES:
        known = " or ".join("@" + s for s in SOURCES)
        raise UserError(f"quantizer {name!r}: @{source} is not a calibration source; use {known}")
    quantizer.name, quantizer.calibration_source = name, source
    return quantizer


def known_quantizers() -> str:
    return ", ".join(getattr(QUANTIZER_FAMILIES.get(f), "pattern", f) or f for f in QUANTIZER_FAMILIES)
