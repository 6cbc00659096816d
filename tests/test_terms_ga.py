"""terms/ga.py and terms/gdr.py: gradient ascent on the forget set and descent on the retain set, by hand."""

from __future__ import annotations

import pytest
from helpers import LABELS, LOGITS, NLL

from llm_unlearn import terms as objectives


def test_ga_and_gdr_by_hand() -> None:
    assert objectives.ga(LOGITS, LABELS).item() == pytest.approx(-NLL / 2)
    assert objectives.gdr(LOGITS, LABELS).item() == pytest.approx(NLL / 2)
