"""Exact memorization (metrics/em.py) against a hand computation on a tiny model: the model's own
logits over prompt + gt, the argmax at each position before a gt token, the share that hits."""

from __future__ import annotations

import pytest
import torch

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import METRICS, EvalContext, evaluate

RECORDS = [
    {"prompt": "Once upon", "gt": " a time"},
    {"prompt": "ab", "gt": "abab"},
    {"prompt": "x", "gt": ""},
]


def hand_em(model, tok, prompt: str, gt: str) -> float:
    ids = tok(prompt)["input_ids"] + tok(gt, add_special_tokens=False)["input_ids"]
    start = len(tok(prompt)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    hits = [int(logits[t - 1].argmax().item() == ids[t]) for t in range(start, len(ids))]
    return sum(hits) / len(hits)


def test_exact_memorization_equals_the_hand_computation(llama, tok) -> None:
    corpus = MuseCorpus("t", {"verbmem": {"forget": RECORDS}})
    result = evaluate(llama, EvalContext(tok, corpus, batch_size=2), ["exact_memorization"])[
        "exact_memorization"
    ]
    expected = [hand_em(llama, tok, r["prompt"], r["gt"]) for r in RECORDS[:2]]
    assert [v["score"] for v in result["value_by_index"].values()] == pytest.approx(expected)
    assert list(result["value_by_index"]) == [0, 1]  # the empty gt is left out, as open-unlearning's None
    assert result["agg_value"] == pytest.approx(sum(expected) / 2)
    assert result["ci"][0] <= result["agg_value"] <= result["ci"][1]


def test_a_model_that_predicts_every_gt_token_scores_one(tok) -> None:
    # a model whose logits always point at the next gt token: a lookup table over positions
    gt = "abab"
    ids = tok("ab")["input_ids"] + tok(gt, add_special_tokens=False)["input_ids"]

    class Echo(torch.nn.Module):
        config = None

        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # where the metric finds the device

        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, len(tok))
            for t in range(input_ids.shape[1] - 1):
                logits[:, t, input_ids[0, t + 1]] = 1.0
            return type("Out", (), {"logits": logits})()

    corpus = MuseCorpus("t", {"verbmem": {"forget": [{"prompt": "ab", "gt": gt}]}})
    result = evaluate(Echo(), EvalContext(tok, corpus), ["exact_memorization"])["exact_memorization"]
    assert result["agg_value"] == 1.0 and len(ids) == 7


def test_exact_memorization_is_a_forget_metric_on_verbmem() -> None:
    em = METRICS.get("exact_memorization")
    assert (em.role, em.benchmark, em.requires) == ("forget", "muse", {"verbmem": ("forget",)})
    assert (em.point, em.lower_forgets, em.floor, em.new_tokens) == (0.01, True, 0.0, 0)
