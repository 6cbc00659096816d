"""GPTQ and AWQ through llm-compressor (`pip install llm-unlearn[gptq]`), on CPU or GPU.

Both fit the rounding of each Linear weight to the activations of a calibration set (see
`quant/calibration.py`; the set is recorded with every result):

- GPTQ (`gptq-w{2,3,4,8}-g{32,64,128}`) rounds one input column at a time and moves the
  rounding error onto the columns not yet rounded, weighted by the inverse Hessian X Xᵀ of the
  layer's inputs; symmetric int grid per group (llm-compressor's W4A16 scheme), static
  activation order.
- AWQ (`awq-w4-g{32,64,128}`) multiplies each input channel by a scale s searched on the
  calibration activations (and divides the previous norm or Linear by s), then rounds to an
  asymmetric int grid per group (W4A16_ASYM). Its codes quantize W·diag(s), not W.

Grid of compressed-tensors (b bits, codes q in [-2^(b-1), 2^(b-1) - 1]): w' = (q - z) * s per
group, z = 0 when symmetric. The quantized model is evaluated with its dequantized weights
(w' in float32), the values llm-compressor's own fake-quantized forward computes with.

A name may fix its calibration text, `gptq-w4-g128@forget` (`quant/registry.py`): calibrated on the
forget set, the quantization is one an adversary chose, so such a column is an attack (`route_of`).
"""

from __future__ import annotations

import contextlib
import copy
import re
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from torch import nn

from llm_unlearn.columns import register_column
from llm_unlearn.errors import UserError
from llm_unlearn.quant.calibration import SOURCES
from llm_unlearn.quant.registry import Quantizer, WeightCodes, register_quantizer
from llm_unlearn.quant.rtn import quantization_targets

_GPTQ_NAME = re.compile(r"gptq-w(?P<bits>[2348])-g(?P<group>32|64|128)")
_AWQ_NAME = re.compile(r"awq-w(?P<bits>4)-g(?P<group>32|64|128)")
#: the optional calibration source a name may end with (`quant/registry.py` parses it)
_SOURCE_SUFFIX = f"[{'|'.join('@' + source for source in SOURCES)}]"


@register_column("calibrated quantizer")
class CalibratedQuantizer(Quantizer):
    """A quantizer run by llm-compressor's `oneshot` on a copy of the model: a kind of column of its
    own, since its recorded calibration decides its route."""

    needs_calibration = True
    algorithm: str
    symmetric: bool

    def __init__(self, name: str, bits: int, group_size: int) -> None:
        self.name = name
        self.bits = bits
        self.group_size = group_size

    def quantize_model(self, model: nn.Module) -> nn.Module:
        self.quantize_with_codes(model)
        return model

    def quantize_with_codes(self, model: nn.Module) -> dict[str, WeightCodes]:
        """Run the algorithm on a copy of `model`, then give `model` the copy's parameters with
        every quantized weight set to its dequantized codes; return the codes by module name.

        `model` must come from `from_pretrained` (llm-compressor re-reads its config from there).
        """
        if self.calibration is None:
            raise ValueError(f"{self.name} needs calibration data: set `quantizer.calibration` first")
        targets = [name for name, _ in quantization_targets(model)]
        for name in targets:
            columns = model.get_submodule(name).weight.shape[1]
            if columns % self.group_size:
                raise UserError(
                    f"{self.name} cannot quantize {name}: input dim {columns} is not a multiple of "
                    f"{self.group_size}; choose another group size"
                )
        _import("llmcompressor")  # a missing backend is a user error before anything else runs
        work = copy.deepcopy(model)
        with _quiet():  # importing llm-compressor logs too
            _run_oneshot(work, self._modifier(targets), self.calibration)
        codes = {name: _read_codes(work.get_submodule(name)) for name in targets}
        state = work.state_dict()
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                tensor.copy_(state[key])
            for name, c in codes.items():
                model.get_submodule(name).weight.copy_(c.dequantize())
        return codes

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.algorithm,
            "library": _versions("llmcompressor", "compressed-tensors"),
            "bits": self.bits,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "calibration": self.calibration.record() if self.calibration else None,
            "evaluation": "dequantized weights (float32)",
        }

    @classmethod
    def claims(cls, config: Mapping[str, Any]) -> bool:
        return config.get("method") in (GPTQQuantizer.algorithm, AWQQuantizer.algorithm)

    @classmethod
    def route_of(cls, config: Mapping[str, Any]) -> str:
        """An attack where the recorded calibration is the forget set (an `@forget` column, or a
        recipe whose calibration section allows forget): the rounding was fitted to the very text
        the model was to forget, as an adversary quantizing the released model would fit it."""
        calibration = config.get("calibration") or {}
        return "attack" if calibration.get("source") == "forget" else cls.route

    def _scheme(self, targets: list[str]) -> Any:
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

        weights = QuantizationArgs(
            num_bits=self.bits,
            type="int",
            symmetric=self.symmetric,
            strategy="group",
            group_size=self.group_size,
        )
        return QuantizationScheme(targets=targets, weights=weights)

    @abstractmethod
    def _modifier(self, targets: list[str]) -> Any:
        """The llm-compressor modifier that quantizes the Linear modules named `targets`."""


@register_quantizer("gptq")
class GPTQQuantizer(CalibratedQuantizer):
    pattern = "gptq-w{2,3,4,8}-g{32,64,128}" + _SOURCE_SUFFIX
    algorithm = "gptq"
    symmetric = True

    def __init__(self, name: str) -> None:
        match = _GPTQ_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"malformed GPTQ quantizer name {name!r}; expected {self.pattern}")
        super().__init__(name, int(match["bits"]), int(match["group"]))

    def _modifier(self, targets: list[str]) -> Any:
        GPTQModifier = _import("llmcompressor.modifiers.quantization").GPTQModifier
        return GPTQModifier(config_groups={"group_0": self._scheme(targets)})


@register_quantizer("awq")
class AWQQuantizer(CalibratedQuantizer):
    pattern = "awq-w4-g{32,64,128}" + _SOURCE_SUFFIX
    algorithm = "awq"
    symmetric = False
    codes_in_weight_basis = False

    def __init__(self, name: str) -> None:
        match = _AWQ_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"malformed AWQ quantizer name {name!r}; expected {self.pattern}")
        super().__init__(name, int(match["bits"]), int(match["group"]))

    def _modifier(self, targets: list[str]) -> Any:
        AWQModifier = _import("llmcompressor.modifiers.awq").AWQModifier
        return AWQModifier(config_groups={"group_0": self._scheme(targets)})


MISSING = "GPTQ and AWQ need llm-compressor: pip install 'llm-unlearn[gptq]'"


def _import(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise UserError(MISSING) from None


def _versions(*packages: str) -> str:
    try:
        return ", ".join(f"{package} {version(package)}" for package in packages)
    except PackageNotFoundError:
        raise UserError(MISSING) from None


def _run_oneshot(model: nn.Module, modifier: Any, calibration: Any) -> None:
    from datasets import Dataset

    ids = [list(w) for w in calibration.input_ids]
    data = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(w) for w in ids]})
    with _no_pinning_without_accelerator():
        _import("llmcompressor").oneshot(
            model=model,
            dataset=data,
            recipe=[modifier],
            processor=calibration.tokenizer,
            num_calibration_samples=len(ids),
            max_seq_length=len(ids[0]),
            shuffle_calibration_samples=False,  # the windows are already a seeded random sample
        )


def _read_codes(module: nn.Module) -> WeightCodes:
    """The int codes of a Linear llm-compressor quantized: q = quantize(w', s, z), w' = (q - z)·s."""
    from compressed_tensors.quantization.lifecycle.forward import quantize

    args = module.quantization_scheme.weights
    weight = module.weight.detach()
    scale = module.weight_scale.detach()
    zero = getattr(module, "weight_zero_point", None)
    zero = torch.zeros_like(scale) if zero is None else zero.detach()
    codes = quantize(weight, scale, zero, args, dtype=torch.int8)
    low = -(2 ** (args.num_bits - 1))
    groups = scale.numel()
    return WeightCodes(
        codes=(codes.to(torch.int16) - low).reshape(groups, -1),
        levels=torch.arange(low, -low, dtype=torch.float32),
        scale=scale.float().reshape(groups),
        zero=zero.float().reshape(groups),
        shape=weight.shape,
    )


@contextlib.contextmanager
def _no_pinning_without_accelerator() -> Iterator[None]:
    """Skip `IntermediatesCache.pin_memory` when there is no accelerator.

    llm-compressor 0.14's AWQ pins its cached activations to speed up host-to-GPU copies; on a
    machine without an accelerator `Tensor.pin_memory()` raises "Cannot access accelerator
    device when none is available". Pinning only affects copy speed, so skipping it on CPU
    changes no value. Remove once llm-compressor checks for an accelerator itself.
    """
    if torch.accelerator.is_available():
        yield
        return
    IntermediatesCache = _import("llmcompressor.pipelines.cache").IntermediatesCache
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence llm-compressor's per-layer logs (loguru) and progress bars (tqdm; some bars pass
    `disable=` themselves, so it is forced): the audit draws its own bar."""
    from loguru import logger
    from tqdm import tqdm

    init = tqdm.__init__

    def silent(self: tqdm, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, "disable": True})

    tqdm.__init__ = silent
    logger.disable("llmcompressor")
    try:
        yield
    finally:
        logger.enable("llmcompressor")
        tqdm.__init__ = init
