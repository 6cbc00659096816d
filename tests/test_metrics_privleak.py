"""metrics/privleak.py: the membership AUC's convention, PrivLeak, and the Min-K%, Min-K%++, loss and
zlib scores by hand; every PrivLeak metric on a model that memorised its forget set."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import pytest
import torch
from helpers import corpus
from torch import nn
from transformers import PreTrainedTokenizerFast

from llm_unlearn.metrics import METRICS, EvalContext, privleak
from llm_unlearn.metrics.generation import (
    min_k_plus_plus_zscores,
)


class Bigram(nn.Module):
    """Has 'memorised' text made of "ab": predicts a->b and b->a almost surely, anything else uniformly."""

    def __init__(self, tok: PreTrainedTokenizerFast) -> None:
        super().__init__()
        a, b = tok.convert_tokens_to_ids(["a", "b"])
        table = torch.zeros(len(tok), len(tok))
        table[a, b] = table[b, a] = 12.0
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


# --- PrivLeak pure parts ---------------------------------------------------------------------


def test_membership_auc_convention() -> None:
    # members score lowest (memorised) -> 0; members highest -> 1; a swapped label would flip these
    assert privleak.membership_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert privleak.membership_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert privleak.membership_auc([2.0, 2.0], [2.0, 2.0]) == 0.5
    # P(member score > non-member score) over the 4 pairs: only (3, 2)
    assert privleak.membership_auc([1.0, 3.0], [2.0, 4.0]) == 0.25


def test_privleak_value() -> None:
    assert privleak.privleak_value(0.25, 0.5) == -50.0
    assert privleak.privleak_value(0.5, 0.5) == 0.0
    assert privleak.privleak_value(0.6, 0.4) == pytest.approx(50.0)


def test_min_k_score_by_hand() -> None:
    lp = torch.tensor([-1.0, -5.0, -2.0, -8.0, -3.0])
    assert privleak.min_k_score(lp, 0.4) == pytest.approx(6.5)  # floor(5 * 0.4) = 2 lowest: -8, -5
    assert privleak.min_k_score(lp, 0.1) == pytest.approx(8.0)  # at least one token
    assert privleak.min_k_score(lp, 1.0) == pytest.approx(3.8)
    assert privleak.min_k_score(lp[:4], 0.4) == pytest.approx(8.0)  # floor(1.6) = 1, as MUSE's int()
    with pytest.raises(ValueError, match="no scored tokens"):
        privleak.min_k_score(torch.tensor([]), 0.4)


def test_loss_and_zlib_scores() -> None:
    lp = torch.tensor([-1.0, -3.0])
    assert privleak.loss_score(lp) == 2.0
    assert privleak.zlib_score(lp, "abcabc") == pytest.approx(2.0 / len(zlib.compress(b"abcabc")))


def test_min_k_plus_plus_zscores_by_hand() -> None:
    # p = (1/2, 1/4, 1/4): mu = -1.5 ln 2, sigma = ln 2 / 2, so z = +1 for token 0, -1 for token 1;
    # a uniform row has sigma 0 and every z 0 (finite, thanks to the floor)
    log_probs = torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]).log()
    z = min_k_plus_plus_zscores(log_probs, torch.tensor([0, 1, 2]))
    assert z.tolist() == pytest.approx([1.0, -1.0, 0.0], abs=1e-5)
    # the lowest 40 % of (1, -1, 0, 2, 3) is (-1, 0): score 0.5
    assert privleak.min_k_score(torch.tensor([1.0, -1.0, 0.0, 2.0, 3.0]), 0.4) == pytest.approx(0.5)


# --- metrics end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["privleak", "privleak_loss", "privleak_zlib", "privleak_min_k_plus_plus"])
def test_privleak_metrics_on_memorising_model(name: str, tok: PreTrainedTokenizerFast) -> None:
    # forget = [A, A], holdout = [C, A] where A is memorised: the pairs (A, C) give 0 and (A, A)
    # ties give 0.5, so AUC = 1/4. A flipped convention would give 3/4.
    a, c = "ab" * 10, "cd" * 10
    data = corpus(privleak={"forget": [a, a], "holdout": [c, a]})
    result = METRICS.get(name).fn(Bigram(tok), EvalContext(tok, data, batch_size=3))
    assert result["auc"] == pytest.approx(0.25)
    assert result["agg_value"] == pytest.approx(-50.0)
    assert (result["reference"], result["reference_auc"]) == ("ideal-0.5", 0.5)
    assert [v["member"] for v in result["value_by_index"].values()] == [True, True, False, False]
    s = [v["score"] for v in result["value_by_index"].values()]
    assert s[0] < s[2]  # higher = less likely a member

    result = METRICS.get(name).fn(Bigram(tok), EvalContext(tok, data, privleak_reference_auc=0.4))
    assert result["agg_value"] == pytest.approx((0.25 - 0.4) / 0.4 * 100)
    assert (result["reference"], result["reference_auc"]) == ("retrain", 0.4)
