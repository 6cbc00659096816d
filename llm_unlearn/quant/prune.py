"""Pruning columns: a released model with its smallest weights set to zero, an attack on forgetting.

Each Linear weight the quantizers quantize (`quant.rtn.quantization_targets`: all but the head) is
multiplied by a mask M (1 kept, 0 pruned), W' = W ⊙ M:

- `prune-mag-{N}`: unstructured magnitude pruning per layer, the round(N/100 · numel) entries of
  smallest |W_ij| of each weight zeroed (PyTorch's `torch.nn.utils.prune.L1Unstructured`:
  `torch/nn/utils/prune.py`, topk of |W| with largest=False);
- `prune-24`: 2:4 semi-structured magnitude pruning, in each group of 4 consecutive inputs of a
  row the 2 of smallest |W_ij| zeroed (locuslab/wanda `lib/prune.py::prune_magnitude` with
  prune_n=2, prune_m=4);
- `prune-wanda-{N}`: Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large
  Language Models"; locuslab/wanda `lib/prune.py::prune_wanda`, `lib/layerwrapper.py`): score
  S_ij = |W_ij| · ‖X_j‖₂, X_j the j-th input feature over every calibration token, compared per
  output row, the int(in · N/100) lowest of each row zeroed (stable sort). Like the reference, the
  blocks are pruned in order and a block's activations come from the model with the blocks before
  it already pruned (one forward pass over the calibration windows per block). The windows are the
  audit's calibration text (`quant/calibration.py`), recorded with every result;
- `prune-sparsegpt-{N}`: SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models
  Can Be Accurately Pruned in One-Shot"; IST-DASLab/sparsegpt `sparsegpt.py::fasterprune`) through
  llm-compressor's `SparseGPTModifier` (`pip install llm-unlearn[gptq]`;
  `llmcompressor/modifiers/pruning/sparsegpt/sgpt_sparsify.py`), on the same calibration windows:
  with H = 2XXᵀ + λI (λ = 0.01 · mean diag), in each block of 128 inputs the weights of lowest
  w_ij² / [H⁻¹]_jj² are zeroed, and each pruned column's error is moved onto the columns not yet
  visited, δW = -(w_j / [H⁻¹]_jj) · H⁻¹_{j,:} (the OBS update): the kept weights change too.

A pruned model is a change made to the model (not a format: `is_format` False, evaluated in the
checkpoint's precision) and an attack route. Its cell keeps the masks, one bit a weight
(`numpy.packbits`), not the weights: the cell is rebuilt from the checkpoint and the masks
(`artifacts_hold_the_model`); SparseGPT, whose kept weights move, is cached as changed tensors like
a cast. Every cell has `sparsity.json`, the fraction of zeros of each pruned weight (`read_sparsity`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from llm_unlearn.columns import register_column
from llm_unlearn.errors import UserError
from llm_unlearn.quant.calibrated import _import, _quiet, _run_oneshot, _versions
from llm_unlearn.quant.registry import Quantizer, WeightCodes, register_quantizer
from llm_unlearn.quant.rtn import SKIPPED, quantization_targets

METHOD = "prune"
MASKS, SPARSITY = "masks.safetensors", "sparsity.json"
# N without a leading zero, so one column has one name
_NAME = re.compile(r"prune-(?:(?P<criterion>mag|wanda|sparsegpt)-(?P<percent>[1-9][0-9]?)|(?P<semi>24))")
CRITERIA = {"mag": "magnitude", "24": "2:4", "wanda": "wanda", "sparsegpt": "sparsegpt"}
GRANULARITY = {
    "magnitude": "layer",
    "2:4": "4 consecutive inputs",
    "wanda": "output row",
    "sparsegpt": "blocks of 128 inputs",
}
CALIBRATED = ("wanda", "sparsegpt")
#: what a cell's weights are, by whether the kept weights moved (SparseGPT)
EVALUATION = (
    "the checkpoint's weights with the pruned ones set to zero",
    "SparseGPT's weights: the pruned ones zero, the kept ones updated",
)


@register_column(METHOD)  # a recorded configuration finds this kind: an attack, not a format
@register_quantizer(METHOD)
class Prune(Quantizer):
    """Magnitude, 2:4, Wanda or SparseGPT pruning: `prune-mag-{N}`, `prune-24`, `prune-wanda-{N}`,
    `prune-sparsegpt-{N}`."""

    pattern = "prune-mag-{1..99}, prune-24, prune-wanda-{1..99}, prune-sparsegpt-{1..99}"
    has_codes = False
    is_format = False
    route = "attack"

    def __init__(self, name: str) -> None:
        match = _NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"malformed pruning name {name!r}; expected {self.pattern} (N in 1..99)")
        self.name = name
        self.criterion = CRITERIA[match["semi"] or match["criterion"]]
        self.percent = 50 if match["semi"] else int(match["percent"])
        self.needs_calibration = self.criterion in CALIBRATED
        # the masks rebuild a cell from the checkpoint, unless SparseGPT moved the kept weights too
        self.artifacts_hold_the_model = self.criterion != "sparsegpt"
        #: the last pruning's keep-masks (packed, with their shape) and achieved sparsity, by module name
        self.masks: dict[str, tuple[torch.Tensor, torch.Size]] = {}
        self.sparsity: dict[str, float] = {}

    def check_model(self, model: nn.Module) -> None:
        if self.criterion != "2:4":
            return
        for name, module in quantization_targets(model):
            if module.weight.shape[1] % 4:
                raise UserError(
                    f"{self.name} cannot prune {name}: input dim {module.weight.shape[1]} is not a "
                    "multiple of 4; choose prune-mag-50 or prune-wanda-50"
                )

    def quantize_model(self, model: nn.Module) -> nn.Module:
        self.check_model(model)  # before anything is pruned
        if self.needs_calibration and self.calibration is None:
            raise ValueError(f"{self.name} needs calibration data: set `quantizer.calibration` first")
        self.masks, self.sparsity = {}, {}
        if self.criterion == "sparsegpt":
            self._sparsegpt(model)
            return model
        for name, module, mask in self._masks(model):
            apply_mask(module.weight, mask)  # before Wanda's next block runs on the pruned model
            self.masks[name] = (pack_mask(mask), mask.shape)  # an eighth of a bool mask, on the CPU
            self.sparsity[name] = zero_fraction(module.weight)
        return model

    def _masks(self, model: nn.Module) -> Iterator[tuple[str, nn.Linear, torch.Tensor]]:
        if self.criterion == "wanda":
            yield from wanda_masks(model, self.calibration.input_ids, self.percent)
            return
        for name, module in quantization_targets(model):
            if self.criterion == "magnitude":
                yield name, module, magnitude_mask(module.weight, self.percent)
            else:
                yield name, module, semi_structured_mask(module.weight)

    def _sparsegpt(self, model: nn.Module) -> None:
        """SparseGPT by llm-compressor on a copy of `model` (`model` must come from `from_pretrained`,
        as for GPTQ), whose target weights `model` then takes; the achieved sparsity recorded."""
        targets = [name for name, _ in quantization_targets(model)]
        SparseGPTModifier = _import("llmcompressor.modifiers.pruning.sparsegpt").SparseGPTModifier
        work = copy.deepcopy(model)  # llm-compressor hooks and wraps what it runs on
        with _quiet():
            _run_oneshot(
                work, SparseGPTModifier(sparsity=self.percent / 100, targets=targets), self.calibration
            )
        with torch.no_grad():
            for name in targets:
                weight = model.get_submodule(name).weight
                weight.copy_(work.get_submodule(name).weight)
                self.sparsity[name] = zero_fraction(weight)

    def config(self) -> dict[str, Any]:
        library = {"library": _versions("llmcompressor")} if self.criterion == "sparsegpt" else {}
        return {
            "name": self.name,
            "method": METHOD,
            "criterion": self.criterion,
            "sparsity": self.percent / 100,
            "granularity": GRANULARITY[self.criterion],
            **library,
            "calibration": self.calibration.record() if self.calibration else None,
            "skipped": list(SKIPPED),
            "evaluation": EVALUATION[self.criterion == "sparsegpt"],
        }

    @classmethod
    def claims(cls, config: Mapping[str, Any]) -> bool:
        return config.get("method") == METHOD

    def save_artifacts(self, folder: Path) -> None:
        """The last pruning's achieved sparsity per weight and, where they rebuild the cell, its
        masks, packed eight a byte."""
        if self.artifacts_hold_the_model:
            tensors: dict[str, torch.Tensor] = {}
            for name, (packed, shape) in self.masks.items():
                tensors[f"{name}.mask"] = packed
                tensors[f"{name}.shape"] = torch.tensor(list(shape))
            save_file(tensors, str(folder / MASKS))
        (folder / SPARSITY).write_text(json.dumps(self.sparsity, indent=1) + "\n")

    def load_artifacts(self, folder: Path, model: nn.Module) -> dict[str, WeightCodes]:
        """Prune `model` (the source checkpoint) with the masks kept in `folder`; no codes."""
        for name, mask in read_masks(folder).items():
            weight = model.get_submodule(name).weight
            apply_mask(weight, mask.to(weight.device))
        return {}


def magnitude_mask(weight: torch.Tensor, percent: int) -> torch.Tensor:
    """Keep-mask of `weight` without its round(percent/100 · numel) smallest |w| (L1Unstructured's count)."""
    pruned = round(percent / 100 * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[torch.topk(weight.detach().abs().flatten(), pruned, largest=False).indices] = False
    return mask.reshape(weight.shape)


def semi_structured_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep-mask of `weight` [out, in] without the 2 smallest |w| of every 4 consecutive inputs of a row."""
    groups = weight.detach().abs().float().reshape(weight.shape[0], -1, 4)
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(-1, torch.topk(groups, 2, dim=-1, largest=False).indices, False)
    return mask.reshape(weight.shape)


def wanda_mask(weight: torch.Tensor, input_norm: torch.Tensor, percent: int) -> torch.Tensor:
    """Keep-mask of `weight` [out, in] without the int(in · percent/100) lowest |W_ij| · ‖X_j‖₂ of each
    row; `input_norm` [in] is ‖X_j‖₂ over the calibration tokens (any common factor of it, as the
    reference's mean over samples, ranks alike)."""
    score = weight.detach().abs().float() * input_norm.float()[None, :]
    pruned = int(weight.shape[1] * percent / 100)  # the reference's count, int(columns · ratio)
    mask = torch.ones_like(score, dtype=torch.bool)
    mask.scatter_(1, torch.sort(score, dim=-1, stable=True).indices[:, :pruned], False)
    return mask


def wanda_masks(
    model: nn.Module, windows: Sequence[Sequence[int]], percent: int
) -> Iterator[tuple[str, nn.Linear, torch.Tensor]]:
    """Wanda's keep-mask of each target of `model`, block by block: the caller applies each mask as
    it comes, so a block's activations are those of the model with the blocks before it pruned."""
    for block in blocks(quantization_targets(model)):
        norms = input_norms(model, [module for _, module in block], windows)
        for (name, module), norm in zip(block, norms, strict=True):
            yield name, module, wanda_mask(module.weight, norm, percent)


def blocks(targets: Iterator[tuple[str, nn.Linear]]) -> list[list[tuple[str, nn.Linear]]]:
    """`targets` grouped by block, in order: the name up to its first number (`model.layers.3`), as
    the reference prunes one decoder layer at a time from the same activations; a module outside a
    numbered block is a block of its own."""
    grouped: dict[str, list[tuple[str, nn.Linear]]] = {}
    for name, module in targets:
        parts = name.split(".")
        end = next((i for i, part in enumerate(parts) if part.isdigit()), len(parts) - 1)
        grouped.setdefault(".".join(parts[: end + 1]), []).append((name, module))
    return list(grouped.values())


def input_norms(
    model: nn.Module, modules: list[nn.Linear], windows: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """‖X_j‖₂ of each of `modules`' inputs over every token of `windows`, run through `model` one
    window at a time (float32, as the reference accumulates)."""
    squares = [torch.zeros(m.weight.shape[1], device=m.weight.device) for m in modules]

    def accumulate(i: int) -> Any:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float()
            squares[i] += x.reshape(-1, x.shape[-1]).pow(2).sum(0)

        return hook

    handles = [m.register_forward_pre_hook(accumulate(i)) for i, m in enumerate(modules)]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for window in windows:
                model(input_ids=torch.tensor([list(window)], device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [s.sqrt() for s in squares]


def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Set the entries of `weight` that `mask` does not keep to zero, in place."""
    with torch.no_grad():
        weight.masked_fill_(~mask, 0)


def zero_fraction(weight: torch.Tensor) -> float:
    """The fraction of zeros in `weight`: a pruned weight's achieved sparsity."""
    return (weight == 0).sum().item() / weight.numel()


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """`mask` flattened, eight entries a byte (`numpy.packbits`, first entry in the high bit), on the CPU."""
    return torch.from_numpy(np.packbits(mask.cpu().numpy().reshape(-1)))


def unpack_mask(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The bool mask of `shape` that `pack_mask` packed."""
    bits = np.unpackbits(packed.numpy(), count=shape.numel()).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


def read_masks(folder: Path) -> dict[str, torch.Tensor]:
    """The keep-masks of a pruned cell, by module name."""
    masks = {}
    with safe_open(str(folder / MASKS), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            if key.endswith(".mask"):
                name = key.removesuffix(".mask")
                shape = torch.Size(f.get_tensor(f"{name}.shape").tolist())
                masks[name] = unpack_mask(f.get_tensor(key), shape)
    return masks


def read_sparsity(folder: Path) -> dict[str, float]:
    """The achieved sparsity (fraction of zeros) of each pruned weight of the cell in `folder`."""
    return json.loads((folder / SPARSITY).read_text())
