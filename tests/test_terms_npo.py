"""terms/npo.py: NPO against numbers computed by hand, at and away from the reference, and MUSE's
raw-logit form."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_llama
from helpers import LABELS, LOGITS, NLL, Z0, Z

from llm_unlearn import terms as objectives
from llm_unlearn.terms import npo_muse


def test_npo_by_hand() -> None:
    beta = 0.1
    # margin 10 -> beta * margin = 1: L = -(2/beta) log sigmoid(1) = 20 log(1 + e^-1)
    value = objectives.npo(LOGITS, LABELS, torch.tensor([NLL - 10.0]), beta)
    assert value.item() == pytest.approx(20 * math.log(1 + math.exp(-1)), rel=1e-5)


def test_npo_at_reference_is_2_over_beta_log_2() -> None:
    for beta in (0.1, 0.5, 2.0):
        value = objectives.npo(LOGITS, LABELS, torch.tensor([NLL]), beta)
        assert value.item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)


def test_npo_gradient_at_reference_is_ga_on_summed_nll(tok) -> None:
    """At θ = θ₀, ∇L_NPO = −∇ mean_seq nll(θ, x): ascent on the SUMMED token NLL.

    An implementation on raw logits, or on the mean token NLL, gives another gradient.
    """
    model = tiny_llama(tok)
    batch = tok(["Alva Merrin was born in Tolvenridge.", "She wrote The Amber Bell."], padding=True)
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    labels = ids.masked_fill(mask == 0, -100)

    def grads(loss_fn) -> list[torch.Tensor]:
        model.zero_grad()
        loss_fn(model(input_ids=ids, attention_mask=mask).logits).backward()
        return [p.grad.clone() for p in model.parameters()]

    with torch.no_grad():
        ref = objectives.sequence_nll(model(input_ids=ids, attention_mask=mask).logits, labels)
    npo = grads(lambda logits: objectives.npo(logits, labels, ref, beta=0.1))
    summed = grads(lambda logits: -objectives.sequence_nll(logits, labels).mean())
    token_mean = grads(lambda logits: objectives.ga(logits, labels))
    for a, b in zip(npo, summed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert not all(torch.allclose(a, b, rtol=1e-3) for a, b in zip(npo, token_mean, strict=True))


def test_muse_compat_npo_is_the_raw_logit_form_by_hand() -> None:
    # z₀ − z = (1, 0): L = −(2/β) · mean(log σ(β), log σ(0)), β = 0.1
    expected = -(2 / 0.1) * (-math.log(1 + math.exp(-0.1)) + math.log(0.5)) / 2
    assert npo_muse(Z, Z0, 0.1).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(13.37544, rel=1e-5)
