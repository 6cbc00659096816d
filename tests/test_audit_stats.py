"""audit/stats.py: the paired recovery (PrivLeak's passages resampled once), the three states before
any recovery and the verdict. The intervals themselves: tests/test_metrics_bootstrap.py."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import mean_cell, privleak_cell

from llm_unlearn.audit import stats
from llm_unlearn.audit.stats import recovery
from llm_unlearn.metrics import METRICS


def test_paired_recovery_is_exact_when_every_example_moves_alike() -> None:
    # t_i = u_i + 10 and q_i = u_i + 5: every paired resample has ratio 5 / 10 whatever u_i are
    u = [0.0, 40.0, 80.0, 20.0, 60.0]
    t, q = [x + 10 for x in u], [x + 5 for x in u]
    found = stats.paired_recovery(mean_cell(t), mean_cell(u), mean_cell(q))
    assert found.value == pytest.approx(0.5) and found.ci == pytest.approx((0.5, 0.5))
    forgotten = stats.forgetting(mean_cell(t), mean_cell(u)).forgotten
    assert forgotten.value == pytest.approx(10) and forgotten.ci == pytest.approx((10, 10))
    # resampling the three cells independently instead would mix the u_i spread into the ratio
    rng = np.random.default_rng(0)
    means = [np.array(x)[rng.integers(0, 5, size=(1000, 5))].mean(1) for x in (t, u, q)]
    unpaired = (means[2] - means[1]) / (means[0] - means[1])
    assert np.percentile(unpaired, 97.5) - np.percentile(unpaired, 2.5) > 1


def test_paired_recovery_by_hand() -> None:
    # u = [0, 0], t = [10, 20], q = [5, 0]. Resampled index pairs: (0, 0) with p 1/4 -> t 10, q 5,
    # r = 0.5; (1, 1) p 1/4 -> t 20, q 0, r = 0; mixed p 1/2 -> t 15, q 2.5, r = 1/6. The 2.5th
    # percentile is 0, the 97.5th 0.5. Forgotten: 15, interval [10, 20].
    found = stats.paired_recovery(mean_cell([10, 20]), mean_cell([0, 0]), mean_cell([5, 0]))
    assert found.value == pytest.approx(1 / 6) and found.ci == (0.0, 0.5)
    state = stats.forgetting(mean_cell([10, 20]), mean_cell([0, 0]))
    assert state.forgotten == stats.Move(15, (10.0, 20.0)) and state.state == stats.FORGOTTEN


def test_resamples_with_a_zero_denominator_are_dropped() -> None:
    # t = [0, 30, 30, 30, 30], u = 0, q = t / 2: r = 0.5 wherever defined; a resample of only the
    # first example (p = 5^-5 each) has M(t) = M(u) and no ratio
    t, u = [0.0, 30, 30, 30, 30], [0.0] * 5
    cells = [mean_cell(t), mean_cell(u), mean_cell([x / 2 for x in t])]
    counts = stats.examples(cells[0]).resample(20_000, stats.SEED)
    assert (counts[:, 0] == 5).any()  # there are such resamples under this seed
    found = stats.paired_recovery(*cells, resamples=20_000)
    assert found.ci == pytest.approx((0.5, 0.5))
    assert stats.percentile_interval(np.array([np.nan, np.inf])) is None


def test_a_move_wider_than_itself_but_clear_of_zero_is_forgotten_and_its_recovery_fails() -> None:
    # The case: unlearning removed d_i = t_i − u_i = 1, 2, 3, 30, 34 (mean F = 14). Every d_i
    # is > 0, so every resample's mean is ≥ 1 and F's interval excludes 0; yet the spread (sd 14.8,
    # 6.6 for a mean of 5) makes the interval about 26 points wide, wider than F itself: the old rule
    # left this recovery undefined and the gate open. The column brings back 96 % of every d_i.
    d = [1.0, 2.0, 3.0, 30.0, 34.0]
    t = [60.0, 61.0, 62.0, 63.0, 64.0]
    u = [x - y for x, y in zip(t, d, strict=True)]
    q = [x + 0.96 * y for x, y in zip(u, d, strict=True)]
    state = stats.forgetting(mean_cell(t), mean_cell(u))
    lo, hi = state.forgotten.ci
    assert state.forgotten.value == pytest.approx(14) and lo >= 1 and hi - lo > 14
    assert state.state == stats.FORGOTTEN
    found = stats.paired_recovery(mean_cell(t), mean_cell(u), mean_cell(q))
    assert found.value == pytest.approx(0.96) and found.ci == pytest.approx((0.96, 0.96))
    assert stats.verdict(found.value, found.ci) == stats.FAILS


def test_not_forgotten_below_one_point_or_with_an_interval_reaching_zero() -> None:
    u = [0.0] * 10
    # moved by 0.5 point on every example: interval [0.5, 0.5] clear of 0, but under one point
    state = stats.forgetting(mean_cell([0.5] * 10), mean_cell(u))
    assert state.forgotten == stats.Move(0.5, (0.5, 0.5)) and state.state == stats.NOT_FORGOTTEN
    # moved by 2 points on average, all of it on one example of ten: a resample misses it with
    # p = 0.9^10 = 35 %, so the 2.5th percentile of F is 0
    state = stats.forgetting(mean_cell([0.0] * 9 + [20.0]), mean_cell(u))
    assert state.forgotten.value == 2 and state.forgotten.ci[0] == 0 and state.state == stats.NOT_FORGOTTEN
    # a model that knows more after unlearning has not forgotten either
    assert stats.forgetting(mean_cell([5.0] * 10), mean_cell([9.0] * 10)).state == stats.NOT_FORGOTTEN
    # no retrain model and no floor: the target is taken to know (the gate fails closed)
    assert stats.forgetting(mean_cell([0.5] * 10), mean_cell(u)).reference == "none"


def test_nothing_to_forget_when_the_target_knows_no_more_than_the_retrain_model() -> None:
    # F = 50 on every example; but the target is 2 points above the retrain model, all on one
    # example of ten: R's interval reaches 0, so the metric cannot test this forget set
    t, u = [50.0] * 10, [0.0] * 10
    retrain = [50.0] * 9 + [30.0]
    state = stats.forgetting(mean_cell(t), mean_cell(u), mean_cell(retrain))
    assert state.known == stats.Move(2.0, (0.0, state.known.ci[1])) and state.reference == "retrain"
    assert state.state == stats.NOTHING_TO_FORGET
    # 10 points above it on every example: the target knows, and the model forgot
    state = stats.forgetting(mean_cell(t), mean_cell(u), mean_cell([40.0] * 10))
    assert state.known == stats.Move(10.0, (10.0, 10.0)) and state.state == stats.FORGOTTEN


def test_without_a_retrain_model_the_floor_tells_whether_the_target_knows() -> None:
    # ROUGE's floor is 0: a target at 0.5 knows less than a point of it
    state = stats.forgetting(mean_cell([0.5] * 4), mean_cell([0.0] * 4), floor=0.0)
    assert state.known == stats.Move(0.5, (0.5, 0.5)) and state.state == stats.NOTHING_TO_FORGET
    state = stats.forgetting(mean_cell([30.0] * 4), mean_cell([0.0] * 4), floor=0.0)
    assert state.reference == "floor" and state.state == stats.FORGOTTEN


def test_a_metric_that_rises_as_the_model_forgets_is_oriented() -> None:
    # TOFU's truth-ratio statistic: 0.2 at the target, 0.8 after unlearning, 1 for a model that
    # knows nothing (its floor): F = −(0.2 − 0.8) = 0.6, K = −(0.2 − 1) = 0.8, points of 0.01
    t, u = mean_cell([0.2] * 4), mean_cell([0.8] * 4)
    state = stats.forgetting(t, u, lower_forgets=False, floor=1.0, point=0.01)
    assert state.forgotten.value == pytest.approx(0.6) and state.known.value == pytest.approx(0.8)
    assert state.state == stats.FORGOTTEN
    # read the other way round, the same move is a model that came to know more
    assert stats.forgetting(t, u, floor=1.0, point=0.01).state == stats.NOTHING_TO_FORGET


def test_without_per_example_values_the_rules_apply_to_the_points() -> None:
    assert stats.forgetting({"agg_value": 60}, {"agg_value": 59.5}).state == stats.NOT_FORGOTTEN
    state = stats.forgetting({"agg_value": 60}, {"agg_value": 10}, {"agg_value": 5})
    assert state.state == stats.FORGOTTEN and state.forgotten == stats.Move(50, None)
    assert stats.paired_recovery({"agg_value": 60}, {"agg_value": 10}, {"agg_value": 35}).value == 0.5


def test_paired_recovery_of_privleak_resamples_passages_once() -> None:
    # quantized scores halfway between the target's and the unlearned model's on every passage
    members_t, members_u = [0.1, 0.2, 0.3], [0.6, 0.8, 0.9]
    others = [0.5, 0.7, 0.4]
    target, unlearned = privleak_cell(members_t, others), privleak_cell(members_u, others)
    quantized = privleak_cell([(a + b) / 2 for a, b in zip(members_t, members_u, strict=True)], others)
    found = stats.paired_recovery(target, unlearned, quantized)
    # AUC over the 9 (member, non-member) pairs: target 0; unlearned 0.6 > 2, 0.8 > 3, 0.9 > 3: 8/9;
    # quantized 0.35 > 0, 0.5 > 1 and ties 1 (½), 0.6 > 2: 3.5/9. PrivLeak's reference cancels out.
    assert found.value == pytest.approx((3.5 - 8) / (0 - 8))
    assert found.ci is not None and found.ci[0] <= found.value <= found.ci[1]


@pytest.mark.parametrize(
    ("ratio", "ci", "expected"),
    [
        (0.1, (0.05, 0.2), stats.HOLDS),
        (0.1, (0.05, 0.25), stats.PARTLY),  # hi = 25 % is not below 25 %
        (0.6, (0.5, 0.7), stats.FAILS),  # lo = 50 % is at 50 %
        (0.6, (0.49, 0.7), stats.PARTLY),
        (0.3, None, stats.PARTLY),  # no interval: the point
        (0.1, None, stats.HOLDS),
    ],
)
def test_verdict_thresholds(ratio, ci, expected) -> None:
    assert stats.verdict(ratio, ci) == expected


def test_verdict_with_other_thresholds_and_the_boundary_flag() -> None:
    assert stats.verdict(0.2, (0.15, 0.25), holds_below=30, fails_from=60) == stats.HOLDS
    assert stats.verdict(0.2, (0.15, 0.25), holds_below=10, fails_from=15) == stats.FAILS
    crossing = [(0.1, 0.25), (0.2, 0.3), (0.45, 0.55), (0.2, 0.6)]
    settled = [(0.1, 0.2), (0.3, 0.45), (0.5, 0.6), (0.25, 0.49)]
    assert all(stats.crosses_boundary(ci) for ci in crossing)
    assert not any(stats.crosses_boundary(ci) for ci in settled) and not stats.crosses_boundary(None)
    assert stats.crosses_boundary((0.2, 0.3), holds_below=10, fails_from=40) is False


def test_privleak_rises_as_the_model_forgets() -> None:
    # MUSE's sign: a target whose forget passages all score below the holdout ones has AUC 0, i.e.
    # PrivLeak −100 against the retrain model's AUC 0.5; the retrain model is 0 by definition
    others = [0.5 + 0.05 * i for i in range(10)]
    target = privleak_cell([x - 1 for x in others], others)
    retrain = privleak_cell(others, others)  # ties everywhere: AUC 0.5
    # each forget passage just above its holdout twin: member i beats i + 1 of them, AUC 55/100
    unlearned = privleak_cell([x + 0.025 for x in others], others)
    assert (target["agg_value"], retrain["agg_value"]) == (-100, 0)
    assert unlearned["agg_value"] == pytest.approx(10)
    privleak = METRICS.get("privleak")
    state = stats.forgetting(
        target, unlearned, retrain, lower_forgets=privleak.lower_forgets, floor=privleak.floor
    )
    assert state.known.value == 100 and state.forgotten.value == pytest.approx(110)
    assert state.state == stats.FORGOTTEN


def test_recovery_ratio() -> None:
    assert recovery(quantized=50.0, unlearned=10.0, target=90.0) == 0.5
    assert recovery(quantized=10.0, unlearned=10.0, target=90.0) == 0.0
    assert recovery(quantized=90.0, unlearned=10.0, target=90.0) == 1.0
    assert recovery(quantized=50.0, unlearned=89.5, target=90.0) is None  # unlearning moved nothing
