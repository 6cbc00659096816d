"""What a loss term is, its registry, and the tensor helpers the terms share.

A term is one small unit: the half of the batch it reads (`part`), its parameters (a pydantic
model with defaults, ranges and a description per field), the reference θ₀ it needs and a pure
function of tensors. The trainer reads these declarations, builds the references from their union
and sums `weight · term`; it contains no maths. Conventions (METHODS.md): `labels` hold token ids
with -100 on padding and prompt tokens; logits at position t predict token t+1, so every function
shifts once, the way Hugging Face causal LMs compute `.loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from llm_unlearn.registry import Registry

IGNORE_INDEX = -100

Part = Literal["forget", "retain"]
#: θ₀'s logits on every batch | nll(θ₀, x_f) cached once per forget sequence | θ₀'s hidden states
Reference = Literal["logits", "nll", "hidden"]


class Params(BaseModel):
    """A term's parameters; a term without any uses this empty model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class TermInput:
    """What the trainer computed for one sequence batch a term reads (None where not declared)."""

    logits: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    ref_logits: torch.Tensor | None = None
    ref_nll: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    ref_hidden: torch.Tensor | None = None


class Term:
    """One loss term. Subclasses set the class attributes and `__call__`; `register_term` adds one."""

    name: ClassVar[str]
    part: ClassVar[Part]
    params: ClassVar[type[Params]] = Params
    description: ClassVar[str]
    #: added to a method by a trainer modifier (QUAIL's hinge), not chosen as its forget/retain term
    regulariser: ClassVar[bool] = False
    #: the benchmark layouts whose windows the term can read (AltPO: TOFU's question-answer pairs);
    #: None: any. The recipe refuses a method whose term cannot read its data.
    benchmarks: ClassVar[tuple[str, ...] | None] = None

    def sequences(self, batch: dict[str, torch.Tensor], p: Any, tokenizer: Any) -> dict[str, dict]:
        """The sequence batches (input_ids, attention_mask, labels) the term reads, by name; by
        default the part's own windows. IdkNLL/IdkDPO build refusal pairs here."""
        return {"text": batch}

    def reference(self, p: Any) -> Reference | None:
        """What the term needs of θ₀ under parameters `p`; None: nothing."""
        return None

    def layer(self, p: Any) -> int | None:
        """The decoder layer whose output hidden states the term reads (0-based), None for logits."""
        return None

    def trainable(self, p: Any, model: nn.Module) -> list[str] | None:
        """The parameter names this term's method trains, None for all (RMU trains a few MLPs)."""
        return None

    def __call__(self, inputs: Mapping[str, TermInput], p: Any) -> torch.Tensor:
        raise NotImplementedError


TERMS: Registry[Term] = Registry("loss term")


def register_term(name: str) -> Callable[[type], type]:
    """Class decorator: register one instance of the term under `name`."""
    return TERMS.register_instance(name)


def names(part: Part) -> tuple[str, ...]:
    """The forget or retain terms a method can name (regularisers excluded)."""
    return tuple(n for n in TERMS.names() if TERMS.get(n).part == part and not TERMS.get(n).regulariser)


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits [B, T-1, V], targets [B, T-1] (ignored ones set to 0) and their mask [B, T-1]."""
    logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return logits, targets.masked_fill(~mask, 0), mask


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−log p(x_t | x_<t) per predicted position [B, T-1] (0 where masked) and the mask."""
    logits, targets, mask = shifted(logits, labels)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -logp * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """nll(θ, x) = Σ_t −log p_θ(x_t | x_<t) over label tokens, one value per sequence [B]."""
    nll, _ = token_nll(logits, labels)
    return nll.sum(dim=-1)


def ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ce(θ, x) = mean token cross-entropy over all label tokens of the batch (HF's `.loss`)."""
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp(min=1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is true (0 when there are none)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)
