"""IdkNLL: answer the forget questions with a refusal (TOFU, Maini et al. 2024, arXiv 2401.06121;
the `IdkNLL` baseline of open-unlearning), and the refusal pairing it shares with IdkDPO.

The refusals are one a line in `idk_refusals.txt` (shipped) or in the file a recipe names
(`refusals:`); each forget example draws one, seeded by its index, so an example keeps its refusal
across epochs. MUSE-style raw text has no question/answer split: a window of n tokens is split at
⌈prompt_share · n⌉, the first part is the question x and the rest the answer y (see `idk_pairs`).
QA data (TOFU) will give x and y directly; only `idk_pairs` changes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, Field

from llm_unlearn.data.collate import IGNORE_INDEX
from llm_unlearn.terms.base import Params, Term, TermInput, ce, register_term

SHIPPED_REFUSALS = Path(__file__).with_name("idk_refusals.txt")


@cache
def refusal_texts(path: str | None) -> tuple[str, ...]:
    """The refusals of the file `path` (one a line, blank lines skipped), or the shipped ones."""
    lines = Path(path or SHIPPED_REFUSALS).expanduser().read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def _refusal_file(path: str) -> str:
    if not Path(path).expanduser().is_file():
        raise ValueError(f"{path!r} is not a file (one refusal a line)")
    if not refusal_texts(path):
        raise ValueError(f"{path!r} holds no refusal (one a line)")
    return path


def idk_pairs(
    batch: Mapping[str, torch.Tensor],
    tokenizer: Any,
    refusals: tuple[str, ...],
    prompt_share: float,
    seed: int,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per forget window: x = its first ⌈prompt_share · n⌉ tokens (at least 1, at most n − 1), y = the
    rest, y_idk = " " + a refusal drawn by (seed, index), tokenized without special tokens, then EOS.
    Returns right-padded batches {"idk": x + y_idk, "answer": x + y}, labels -100 on x and padding."""
    pad = tokenizer.pad_token_id
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    idk, answer = [], []
    for row, mask, index in zip(
        batch["input_ids"], batch["attention_mask"], batch["index"].tolist(), strict=True
    ):
        ids = row[: int(mask.sum())].tolist()  # right-padded: the real tokens come first
        cut = min(max(math.ceil(prompt_share * len(ids)), 1), len(ids) - 1)
        text = random.Random(seed * 1_000_003 + index).choice(refusals)
        refusal = tokenizer(" " + text, add_special_tokens=False)["input_ids"] + eos
        idk.append((ids[:cut], refusal))
        answer.append((ids[:cut], ids[cut:]))
    device = batch["input_ids"].device
    return {"idk": _pad(idk, pad, device), "answer": _pad(answer, pad, device)}


def _pad(pairs: list[tuple[list[int], list[int]]], pad: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(x) + len(y) for x, y in pairs)
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    mask = torch.zeros_like(ids)
    for row, (x, y) in enumerate(pairs):
        ids[row, : len(x) + len(y)] = torch.tensor(x + y)
        labels[row, len(x) : len(x) + len(y)] = torch.tensor(y)
        mask[row, : len(x) + len(y)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


class IdkParams(Params):
    refusals: Annotated[str, AfterValidator(_refusal_file)] | None = Field(
        default=None, description="A text file of refusals, one a line; default: the shipped list."
    )
    prompt_share: float = Field(
        default=0.5, gt=0, lt=1, description="Raw text: the share of a window taken as the question x."
    )
    seed: int = Field(default=0, description="Seeds each example's draw of a refusal.")


@register_term("idknll")
class IdkNLL(Term):
    """L = ce(θ, (x, y_idk)): the refusal's mean token NLL, the question x unscored."""

    part = "forget"
    params = IdkParams
    description = "IdkNLL: a refusal as the answer to the forget examples"

    def sequences(self, batch: dict[str, torch.Tensor], p: IdkParams, tokenizer: Any) -> dict[str, dict]:
        return {"idk": idk_pairs(batch, tokenizer, refusal_texts(p.refusals), p.prompt_share, p.seed)["idk"]}

    def __call__(self, inputs: Mapping[str, TermInput], p: IdkParams) -> torch.Tensor:
        x = inputs["idk"]
        return ce(x.logits, x.labels)
