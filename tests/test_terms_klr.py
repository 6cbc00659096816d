"""terms/klr.py: the KL retain term by hand and zero at the reference, the known reference-code bug
(KL on raw logits), and MUSE's raw-logit form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import Z0, Z

from llm_unlearn import terms as objectives
from llm_unlearn.terms import klr_muse


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


def test_muse_compat_klr_is_kl_div_on_raw_logits_by_hand() -> None:
    # Σ exp(z₀)(z₀ − z) / B = e·1 + e·0 over one position, B = 1; batch of two identical rows: same value
    assert klr_muse(Z, Z0).item() == pytest.approx(math.e, rel=1e-6)
    assert klr_muse(Z.repeat(2, 1, 1), Z0.repeat(2, 1, 1)).item() == pytest.approx(math.e, rel=1e-6)
    as_torch = torch.nn.functional.kl_div(Z, Z0, reduction="batchmean", log_target=True)
    assert klr_muse(Z, Z0).item() == pytest.approx(as_torch.item(), rel=1e-6)
