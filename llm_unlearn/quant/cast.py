"""Precision casts: a model shipped in a narrower float dtype, `cast-fp16`, `cast-bf16`, or a chain
of them, `cast-fp16-bf16` (saved in float16, later converted to bfloat16).

Every floating parameter (embeddings, norms and the head included) is rounded to each dtype of the
chain in turn and back to the dtype it is evaluated in, `w.to(torch.float16).to(w.dtype)`: the cell
is evaluated like a simulated one. There are no integer codes (no weight diagnostics); the cache
keeps the cast tensors themselves (`audit/cache.py`'s changed tensors), so a cached cell is the
cast model bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llm_unlearn.quant.registry import Quantizer, register_quantizer

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@register_quantizer("cast")
class Cast(Quantizer):
    """The floating weights rounded through a chain of float dtypes, `cast-{fp16,bf16}[-{fp16,bf16}]...`."""

    pattern = "cast-{fp16,bf16}[-{fp16,bf16}...]"
    has_codes = False

    def __init__(self, name: str) -> None:
        chain = name.split("-")[1:]
        if not chain or any(step not in DTYPES for step in chain):
            raise ValueError(f"malformed cast name {name!r}; expected {self.pattern}")
        self.name = name
        self.chain = tuple(chain)

    def quantize_model(self, model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for parameter in model.parameters():  # a tied weight is one parameter: cast once
                if parameter.is_floating_point():
                    parameter.copy_(cast(parameter, self.chain))
        return model

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "cast",
            "dtypes": [str(DTYPES[step]).removeprefix("torch.") for step in self.chain],
            "bits": 16,
        }


def cast(t: torch.Tensor, chain: tuple[str, ...]) -> torch.Tensor:
    """`t` rounded to each dtype of `chain` in turn, back in its own dtype."""
    out = t
    for step in chain:
        out = out.to(DTYPES[step])
    return out.to(t.dtype)
