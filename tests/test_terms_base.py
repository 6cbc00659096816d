"""Each objective against a number computed by hand, and the two known reference-code bugs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_llama
from helpers import LABELS, LOGITS, NLL

from llm_unlearn import terms as objectives


def test_sequence_nll_and_ce_by_hand() -> None:
    assert objectives.sequence_nll(LOGITS, LABELS).item() == pytest.approx(NLL)
    assert objectives.ce(LOGITS, LABELS).item() == pytest.approx(NLL / 2)
    masked = torch.tensor([[7, -100, 1]])
    assert objectives.ce(LOGITS, masked).item() == pytest.approx(math.log(4 / 3))


def test_ce_matches_huggingface_loss() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 6, 11), torch.randint(0, 11, (3, 6))
    labels[0, 4:] = -100
    shifted = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert objectives.ce(logits, labels).item() == pytest.approx(shifted.item(), rel=1e-6)


def test_ga_and_gdr_by_hand() -> None:
    assert objectives.ga(LOGITS, LABELS).item() == pytest.approx(-NLL / 2)
    assert objectives.gdr(LOGITS, LABELS).item() == pytest.approx(NLL / 2)


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


def test_klr_by_hand_and_zero_at_reference() -> None:
    ref = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # p0 = (1/4, 3/4)
    cur = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])  # p = (1/2, 1/2)
    labels = torch.tensor([[7, 1]])
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # KL(p0 || p)
    assert objectives.klr(cur, ref, labels).item() == pytest.approx(expected, rel=1e-6)
    assert objectives.klr(ref, ref, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_klr_is_not_kl_div_on_raw_logits() -> None:
    """The known bug: F.kl_div(logits, ref_logits) treats unnormalised logits as log-probs."""
    torch.manual_seed(1)
    cur, ref = torch.randn(2, 5, 7) * 3, torch.randn(2, 5, 7) * 3
    labels = torch.randint(0, 7, (2, 5))
    manual = F.kl_div(
        torch.log_softmax(cur[:, :-1], -1),
        torch.log_softmax(ref[:, :-1], -1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    assert objectives.klr(cur, ref, labels).item() == pytest.approx(manual.mean().item(), rel=1e-5)
    buggy = F.kl_div(cur[:, :-1], ref[:, :-1], log_target=True, reduction="none").sum(-1).mean()
    assert objectives.klr(cur, ref, labels).item() != pytest.approx(buggy.item(), rel=1e-2)


def test_entropy_by_hand() -> None:
    # position 0: uniform over 2 tokens, H = ln 2; position 1: p = (3/4, 1/4)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[-100, 0, 1]])
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert objectives.entropy(logits, labels).item() == pytest.approx(-(math.log(2) + h1) / 2)
    masked = torch.tensor([[-100, -100, 1]])  # only position 1 predicts a label token
    assert objectives.entropy(logits, masked).item() == pytest.approx(-h1)


@pytest.mark.parametrize(
    ("distance", "expected"), [("mean_abs", 0.25), ("l2", (1 - math.sqrt(0.5)) / 2), ("linf", 0.25)]
)
def test_quail_hinge_by_hand(distance, expected) -> None:
    # z − z₀ at position 0 = (1, −3): d = 2 | √10 | 3, beyond the margin; at position 1 = (½, ½).
    logits = torch.tensor([[[1.0, -3.0], [0.5, 0.5], [9.0, 9.0]]], requires_grad=True)
    labels = torch.tensor([[-100, 0, 1]])
    loss = objectives.quail_hinge(logits, torch.zeros(1, 3, 2), labels, margin=1.0, distance=distance)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert torch.count_nonzero(logits.grad[0, 0]) == 0  # beyond the margin: no gradient
    assert torch.count_nonzero(logits.grad[0, 2]) == 0  # the last position predicts nothing
    if distance == "mean_abs":  # −(1/V)·sign(z − z₀) / positions
        torch.testing.assert_close(logits.grad[0, 1], torch.tensor([-0.25, -0.25]))


def test_quail_hinge_is_zero_when_every_distance_exceeds_the_margin() -> None:
    logits = torch.tensor([[[1.0, -3.0], [0.5, 0.5], [0.0, 0.0]]], requires_grad=True)
    loss = objectives.quail_hinge(logits, torch.zeros(1, 3, 2), torch.tensor([[-100, 0, 1]]), margin=0.4)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    with pytest.raises(ValueError, match="distance"):
        objectives.quail_hinge(logits, logits, torch.tensor([[-100, 0, 1]]), 1.0, distance="cosine")
