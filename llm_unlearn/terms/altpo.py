"""AltPO: prefer alternate answers over the forget answer, DPO-style (Mekala et al. 2024, "Alternate
Preference Optimization for Unlearning Factual Knowledge in Large Language Models", arXiv 2409.13474).

The alternates come from a file the recipe names (`alternates:`), in the layout open-unlearning's
`community/methods/AltPO/generate.py` writes (and the authors' `generate.py`, with the key
`sub_answer`): one JSON object a line (or a JSON list), {"question", "answer", "alternate"}, a
question repeated on as many lines as it has alternates (`repeats: 5` in their config); `alternate`
may also be a list of strings. A forget window is paired with the rows of its own question and answer:
the window's prompt is compared, token for token, with the prompt `encode_qa` makes of each row in
each TOFU chat template, so a file for another split, model format or tokenizer cannot be paired by
mistake; the alternate window is then built by the same `encode_qa`, as the forget window was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from llm_unlearn.data.collate import IGNORE_INDEX, LabeledWindow, pad_batch
from llm_unlearn.data.tofu import TEMPLATES, encode_qa
from llm_unlearn.errors import UserError
from llm_unlearn.terms.base import Params, Reference, Term, TermInput, register_term, sequence_nll


def altpo(
    nll_alternates: torch.Tensor,
    ref_nll_alternates: torch.Tensor,
    nll_answer: torch.Tensor,
    ref_nll_answer: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """L = −mean_ij log σ(β·[log(π_θ/π_θ₀)(ỹ_ij|x_i) − log(π_θ/π_θ₀)(y_i|x_i)])

    DPO with the j-th alternate answer ỹ_ij of question x_i as the preferred answer and the forget
    answer y_i as the rejected one, averaged over every (i, j) pair, on per-sequence summed log-probs
    of the answer tokens (log π = −nll; alternates [K, B], answers [B]). open-unlearning trains the
    same pairs as rows of its forget set (`QAwithAlternateDataset` + the `DPO` trainer,
    src/trainer/unlearn/dpo.py and `compute_dpo_loss` in src/trainer/utils.py@d3d7cf9), as the
    authors' code does (molereddy/Alternate-Preference-Optimization@c9b78bd dataloader.py, `DPO` under
    `forget_loss=subdpo`); both scale the loss by 2/β, which this one leaves out as IdkDPO does (at
    θ = θ₀ it is log 2): under Adam their retain weight α is `retain_weight: α·β/2` here.
    """
    margin = (ref_nll_alternates - nll_alternates) - (ref_nll_answer - nll_answer).unsqueeze(0)
    return -F.logsigmoid(beta * margin).mean()


@cache
def read_alternates(path: str, key: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """(question, answer) -> its alternates, in file order, from the JSON-lines (or JSON list) file."""
    text = Path(path).expanduser().read_text(encoding="utf-8")
    try:
        rows = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(s) for s in text.splitlines() if s.strip()]
        )
    except json.JSONDecodeError as error:
        raise ValueError(f"{path!r} is neither JSON lines nor a JSON list: {error}") from None
    pairs: dict[tuple[str, str], tuple[str, ...]] = {}
    for index, row in enumerate(rows):
        if not (isinstance(row, dict) and all(isinstance(row.get(f), str) for f in ("question", "answer"))):
            raise ValueError(f"{path!r} row {index}: expected an object with string 'question' and 'answer'")
        alternates = [row[key]] if isinstance(row.get(key), str) else row.get(key)
        if not (isinstance(alternates, list) and alternates and all(isinstance(a, str) for a in alternates)):
            raise ValueError(f"{path!r} row {index}: {key!r} is not a string or a non-empty list of strings")
        pair = (row["question"], row["answer"])
        pairs[pair] = (*pairs.get(pair, ()), *alternates)
    if not pairs:
        raise ValueError(f"{path!r} holds no alternates (one JSON object a line)")
    return pairs


@cache
def _by_prompt(path: str, key: str, tokenizer: Any) -> dict[tuple[int, ...], tuple[int, list[LabeledWindow]]]:
    """The forget window's prompt ids (as `encode_qa` splits them) -> the length of the whole forget
    window and the alternate windows of its question and answer, for every row of the file in every
    TOFU chat template."""
    table = {}
    for (question, answer), alternates in read_alternates(path, key).items():
        for template in TEMPLATES.values():
            window = encode_qa(tokenizer, template, question, answer)
            prompt = tuple(window[: window.labels.count(IGNORE_INDEX)])
            table[prompt] = (len(window), [encode_qa(tokenizer, template, question, a) for a in alternates])
    return table


def alternate_pairs(
    batch: Mapping[str, torch.Tensor], tokenizer: Any, path: str, key: str
) -> dict[str, dict[str, torch.Tensor]]:
    """{"answer": the forget windows as they are, "alternate_j": for j < the most alternates a window
    of the batch has, each window's j-th alternate (cycling through a question's own when it has
    fewer)}: right-padded batches, labels -100 on the prompt and padding."""
    found = []
    for row, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        ids = row[: int(mask.sum())].tolist()  # right-padded: the real tokens come first
        prompt = ids[: int((labels != IGNORE_INDEX).int().argmax())]
        paired = _by_prompt(path, key, tokenizer).get(tuple(prompt))
        if paired is None:
            question = tokenizer.decode(prompt, skip_special_tokens=True)[-80:]
            raise UserError(
                f"alternates: {path} has no row for the forget question ending {question!r}; generate "
                "alternates for this data.forget_split (its question and answer as in the data)"
            )
        # a window the data cut at max_length: its alternates are cut at the same length
        whole, alternates = paired
        cut = len(ids) if len(ids) < whole else None
        found.append([LabeledWindow(a[:cut], a.labels[:cut]) for a in alternates])
    device, pad = batch["input_ids"].device, tokenizer.pad_token_id
    views = {"answer": {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}}
    for j in range(max(len(a) for a in found)):
        seqs = [alternates[j % len(alternates)] for alternates in found]
        views[f"alternate_{j}"] = {k: v.to(device) for k, v in pad_batch(seqs, pad).items()}
    return views


class AltPOParams(Params):
    alternates: str = Field(
        description="AltPO: a JSON-lines file of question, answer and alternate answer per line (as "
        "open-unlearning's community/methods/AltPO/generate.py writes it)."
    )
    alternate_key: str = Field(
        default="alternate",
        description="The field of the alternates file holding the alternate answer (the authors' "
        "files: sub_answer).",
    )
    beta: float = Field(default=0.1, gt=0, description="DPO's inverse temperature β.")

    @model_validator(mode="after")
    def _readable(self) -> AltPOParams:
        # here, not on the field: the recipe's copy of a term field is optional, and None has no file
        if not Path(self.alternates).expanduser().is_file():
            raise ValueError(f"{self.alternates!r} is not a file (JSON lines of question, answer, alternate)")
        read_alternates(self.alternates, self.alternate_key)
        return self


@register_term("altpo")
class AltPO(Term):
    part = "forget"
    params = AltPOParams
    description = "AltPO: alternate answers preferred over the forget answer"
    benchmarks = ("tofu",)

    def reference(self, p: AltPOParams) -> Reference:
        return "logits"

    def sequences(self, batch: dict[str, torch.Tensor], p: AltPOParams, tokenizer: Any) -> dict[str, dict]:
        return alternate_pairs(batch, tokenizer, p.alternates, p.alternate_key)

    def __call__(self, inputs: Mapping[str, TermInput], p: AltPOParams) -> torch.Tensor:
        answer = inputs["answer"]
        alternates = [view for name, view in inputs.items() if name.startswith("alternate_")]
        return altpo(
            torch.stack([sequence_nll(a.logits, a.labels) for a in alternates]),
            torch.stack([sequence_nll(a.ref_logits, a.labels) for a in alternates]),
            sequence_nll(answer.logits, answer.labels),
            sequence_nll(answer.ref_logits, answer.labels),
            p.beta,
        )
