"""cnn/metrics.py: MIA efficacy, the average gap and the t interval by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm_unlearn.cnn.metrics import average_gap, mia_efficacy, t_interval


def test_mia_efficacy_on_separable_confidences():
    rng = np.random.default_rng(0)
    members = rng.uniform(0.9, 1.0, 200)
    non_members = rng.uniform(0.1, 0.4, 100)
    assert mia_efficacy(members, non_members, rng.uniform(0.9, 1.0, 50)) == pytest.approx(0, abs=2)
    assert mia_efficacy(members, non_members, rng.uniform(0.1, 0.4, 50)) == pytest.approx(100, abs=2)


def test_average_gap_by_hand():
    retrain = {"FA": 90.0, "RA": 99.0, "TA": 92.0, "MIA": 10.0}
    row = {"FA": 95.0, "RA": 98.0, "TA": 91.0, "MIA": 16.0}
    assert average_gap(row, retrain) == pytest.approx((5 + 1 + 1 + 6) / 4)


def test_t_interval_by_hand():
    # [1, 2, 3]: mean 2, s = 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / √3
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(t_interval([5.0])[1])
