"""terms/base.py: the shared maths of the terms (sequence NLL, token-mean CE) against numbers by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
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
