"""Extraction strength (metrics/es.py) against open-unlearning's loop, ported line by line
(`src/evals/metrics/memorization.py::extraction_strength`), on the tiny model's own logits."""

from __future__ import annotations

import pytest
import torch

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import METRICS, EvalContext, evaluate
from llm_unlearn.metrics.es import extraction_strength_of

RECORDS = [
    {"prompt": "Once upon", "gt": " a time"},
    {"prompt": "ab", "gt": "abab"},
    {"prompt": "x", "gt": ""},
]


def their_es(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """open-unlearning's `_extraction_strength` body for one example, as written there."""
    valid_len = len(labels)
    for k in range(valid_len):
        if torch.equal(preds[k:], labels[k:]):
            break
    if valid_len == 0:
        return 0
    return 1 - (k / valid_len)


def hand_es(model, tok, prompt: str, gt: str) -> float:
    prompt_ids, gt_ids = tok(prompt)["input_ids"], tok(gt, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + gt_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    preds = logits[len(prompt_ids) - 1 : len(ids) - 1].argmax(-1)
    return their_es(preds, torch.tensor(gt_ids, dtype=torch.long))


@pytest.mark.parametrize(
    "hits",
    [[1, 1, 1, 1], [0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0], [0, 0, 0, 0], [1], [0], []],
)
def test_es_of_hits_is_their_loop(hits: list[int]) -> None:
    labels = torch.arange(len(hits))
    preds = torch.where(torch.tensor(hits, dtype=torch.bool), labels, -1)
    assert extraction_strength_of(torch.tensor(hits, dtype=torch.bool)) == pytest.approx(
        their_es(preds, labels)
    )


def test_es_values_by_hand() -> None:
    # the suffix after the last miss: k = 2 of 4; no suffix at all leaves their k at |y| − 1
    assert extraction_strength_of(torch.tensor([True, False, True, True])) == 0.5
    assert extraction_strength_of(torch.tensor([True, True, True, False])) == 0.25


def test_extraction_strength_equals_the_hand_computation(llama, tok) -> None:
    corpus = MuseCorpus("t", {"verbmem": {"forget": RECORDS}})
    result = evaluate(llama, EvalContext(tok, corpus, batch_size=2), ["extraction_strength"])[
        "extraction_strength"
    ]
    expected = [hand_es(llama, tok, r["prompt"], r["gt"]) for r in RECORDS]
    assert [v["score"] for v in result["value_by_index"].values()] == pytest.approx(expected)
    assert expected[2] == 0  # the empty gt scores 0 and is kept, as theirs
    assert result["agg_value"] == pytest.approx(sum(expected) / 3)
    assert result["ci"][0] <= result["agg_value"] <= result["ci"][1]


def test_a_model_that_misses_one_gt_token_extracts_the_rest(tok) -> None:
    """A lookup model that predicts every next token but the one at `wrong` (the second of gt
    "abab" after BOS + "ab"): hits 1, 0, 1, 1, so k = 2 and ES = 1 − 2/4."""
    wrong = 3

    class Echo(torch.nn.Module):
        config = None

        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # where the metric finds the device

        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, len(tok))
            for t in range(input_ids.shape[1] - 1):
                logits[:, t, input_ids[0, t + 1] if t != wrong else 0] = 1.0
            return type("Out", (), {"logits": logits})()

    corpus = MuseCorpus("t", {"verbmem": {"forget": [{"prompt": "ab", "gt": "abab"}]}})
    result = evaluate(Echo(), EvalContext(tok, corpus), ["extraction_strength"])["extraction_strength"]
    assert result["agg_value"] == 0.5


def test_extraction_strength_is_a_forget_metric_on_verbmem() -> None:
    es = METRICS.get("extraction_strength")
    assert (es.role, es.benchmark, es.requires) == ("forget", "muse", {"verbmem": ("forget",)})
    assert (es.point, es.lower_forgets, es.floor, es.new_tokens) == (0.01, True, 0.0, 0)
