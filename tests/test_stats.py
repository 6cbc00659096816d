"""audit/stats.py: bootstrap intervals against exactly enumerated bootstrap distributions, the paired
recovery, PrivLeak's stratified resampling, the three states before any recovery and the verdict."""

from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from llm_unlearn.audit import stats
from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import METRICS, EvalContext, evaluate


def mean_cell(scores: list[float]) -> dict:
    """A VerbMem/KnowMem-like result: agg_value = mean of the per-example scores."""
    by_index = {str(i): {"score": s} for i, s in enumerate(scores)}
    return {"agg_value": float(np.mean(scores)), "value_by_index": by_index}


def privleak_cell(members: list[float], others: list[float], reference_auc: float = 0.5) -> dict:
    scores = [*members, *others]
    auc = roc_auc_score([1] * len(members) + [0] * len(others), scores)
    by_index = {str(i): {"score": s, "member": i < len(members)} for i, s in enumerate(scores)}
    return {
        "agg_value": (auc - reference_auc) / reference_auc * 100,
        "auc": auc,
        "reference_auc": reference_auc,
        "value_by_index": by_index,
    }


def exact_quantile(distribution: dict[float, Fraction], p: float) -> float:
    """The p-quantile of an exact (enumerated) distribution: the smallest value whose CDF reaches p.
    A Monte-Carlo percentile converges to it when no CDF step sits at p."""
    total = Fraction(0)
    for value in sorted(distribution):
        total += distribution[value]
        if total >= p:
            return value
    raise AssertionError("probabilities do not sum to 1")


def test_mean_interval_is_the_exact_bootstrap_distributions_percentiles() -> None:
    # Resamples of [0, 3, 6]: 27 equally likely ordered triples; their mean = the sum of three draws
    # from {0, 1, 2}, so mean k ∈ 0..6 has counts 1, 3, 6, 7, 6, 3, 1 (of 27). CDF: 1/27 = 3.7 % at 0,
    # 4/27 = 14.8 % at 1: the 10th percentile is 1, by symmetry the 90th is 5; at 95 % the 2.5th
    # percentile is 0 (3.7 % > 2.5 %) and the 97.5th is 6.
    counts = Counter(sum(t) / 3 for t in itertools.product([0, 3, 6], repeat=3))
    assert [counts[k] for k in range(7)] == [1, 3, 6, 7, 6, 3, 1]
    exact = {k: Fraction(c, 27) for k, c in counts.items()}
    assert (exact_quantile(exact, 0.1), exact_quantile(exact, 0.9)) == (1, 5)
    cell = mean_cell([0, 3, 6])
    assert stats.metric_ci(cell, resamples=10_000, confidence=0.8) == [1.0, 5.0]
    assert stats.metric_ci(cell, resamples=10_000) == [0.0, 6.0]


def test_privleak_interval_is_the_exact_stratified_distributions_percentiles() -> None:
    # members [1, 3], non-members [2, 4]: each class resampled on its own, 4 × 4 equally likely pairs
    # of resamples. AUC = share of (member, non-member) pairs with member > non-member; only 3 > 2.
    members, others = [1.0, 3.0], [2.0, 4.0]
    aucs = Counter()
    for m in itertools.product(members, repeat=2):
        for o in itertools.product(others, repeat=2):
            aucs[sum(a > b for a in m for b in o) / 4] += 1
    # AUC 0: 7/16, 0.25: 4/16, 0.5: 4/16, 1: 1/16 -> 10th percentile 0, 90th 0.5 (CDF 15/16)
    assert dict(aucs) == {0.0: 7, 0.25: 4, 0.5: 4, 1.0: 1}
    exact = {(auc - 0.5) / 0.5 * 100: Fraction(c, 16) for auc, c in aucs.items()}  # PrivLeak, AUC_ref 0.5
    cell = privleak_cell(members, others)
    assert cell["agg_value"] == -50.0  # AUC 1/4
    low, high = exact_quantile(exact, 0.1), exact_quantile(exact, 0.9)
    assert stats.metric_ci(cell, resamples=10_000, confidence=0.8) == [low, high] == [-100.0, 0.0]


def test_privleak_resamples_keep_both_classes_and_the_reference_fixed() -> None:
    cell = privleak_cell([0.1, 0.5, 0.2], [0.4, 0.9], reference_auc=0.6)
    found = stats.examples(cell)
    counts = found.resample(500, seed=3)  # how often each passage is drawn, per resample
    assert (counts[:, found.strata == 1].sum(1) == 3).all() and (
        counts[:, found.strata == 0].sum(1) == 2
    ).all()
    values = found.statistic(counts)
    for row, value in zip(counts[:20], values[:20], strict=True):  # each resample as a sample, by sklearn
        row = row.astype(int)
        auc = roc_auc_score(np.repeat(found.strata, row), np.repeat(found.scores, row))
        assert value == pytest.approx((auc - 0.6) / 0.6 * 100)
    # a cell without one of the classes has no interval (no AUC)
    members_only = {str(i): {"score": s, "member": True} for i, s in enumerate([0.1, 0.2])}
    assert stats.metric_ci({"agg_value": 0.0, "reference_auc": 0.5, "value_by_index": members_only}) is None


def test_weighted_auc_equals_sklearn_on_the_repeated_sample_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=9).astype(float)  # many ties
    member = np.arange(9) < 4
    counts = rng.integers(1, 4, size=(30, 9))
    expected = [roc_auc_score(np.repeat(member, row), np.repeat(scores, row)) for row in counts]
    assert stats.weighted_auc(scores, member, counts) == pytest.approx(expected)


def test_constant_metric_has_a_zero_width_interval() -> None:
    assert stats.metric_ci(mean_cell([40.0] * 7)) == [40.0, 40.0]
    # every member scores below every non-member in every resample: AUC 0, PrivLeak −100
    assert stats.metric_ci(privleak_cell([0.1, 0.2], [0.8, 0.9])) == [-100.0, -100.0]


def test_seed_reproduces_and_another_seed_differs() -> None:
    cell = mean_cell(list(np.random.default_rng(1).uniform(0, 100, size=20)))
    assert stats.metric_ci(cell, seed=0) == stats.metric_ci(cell, seed=0)
    assert stats.metric_ci(cell, seed=0) != stats.metric_ci(cell, seed=1)


def test_values_that_do_not_reproduce_the_agg_value_give_no_interval() -> None:
    assert stats.metric_ci(mean_cell([1.0, 2.0]) | {"agg_value": 52.0}) is None
    assert stats.metric_ci({"agg_value": 3.0, "value_by_index": {}}) is None
    assert stats.metric_ci({"agg_value": float("nan"), "value_by_index": {}}) is None


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


def test_evaluate_adds_the_interval_of_every_metric(llama, tok) -> None:
    data = MuseCorpus(
        "test",
        {
            "verbmem": {
                "forget": [{"prompt": "Once upon", "gt": "a time there was"}, {"prompt": "ab", "gt": "ab"}]
            },
            "privleak": {"forget": ["alpha beta", "gamma delta"], "holdout": ["zeta eta", "theta iota"]},
        },
    )
    results = evaluate(llama, EvalContext(tok, data, batch_size=2), ["verbmem", "privleak"])
    for result in results.values():
        assert result["ci"] == stats.metric_ci(result) and result["ci"][0] <= result["ci"][1]


def test_tofu_forget_quality_resamples_the_truth_ratios_against_the_fixed_reference() -> None:
    from scipy.stats import ks_2samp

    ratios, reference = [0.1, 0.2, 0.35, 0.9], [0.5, 0.6, 0.7]
    result = {
        "agg_value": ks_2samp(ratios, reference).pvalue,
        "reference_truth_ratios": reference,
        "value_by_index": {str(i): {"truth_ratio": r} for i, r in enumerate(ratios)},
    }
    found = stats.examples(result)
    assert found.kind == "ks"
    # one resample, by hand: example 0 twice, 1 not, 2 once, 3 once -> [0.1, 0.1, 0.35, 0.9]
    row = np.array([[2.0, 0.0, 1.0, 1.0]])
    assert found.statistic(row)[0] == pytest.approx(ks_2samp([0.1, 0.1, 0.35, 0.9], reference).pvalue)
    ci = stats.metric_ci(result, resamples=200, seed=3)
    assert (
        ci == stats.metric_ci(result, resamples=200, seed=3)
        and 0 <= ci[0] <= result["agg_value"] <= ci[1] <= 1
    )


def test_tofu_model_utility_resamples_within_each_set() -> None:
    from llm_unlearn.metrics.tofu import utility_from_examples

    values = {
        "retain/0": (0.9, 0.8, 0.5), "retain/1": (0.5, 0.4, 0.7),
        "real_authors/0": (0.6, 1.0, 0.2), "real_authors/1": (0.4, 0.5, 0.3),
        "world_facts/0": (0.7, 0.9, 0.6), "world_facts/1": (0.3, 0.2, 0.1),
    }  # fmt: skip
    by_index = {
        k: {"set": k.split("/")[0], "probability": p, "rouge": r, "truth_ratio_stat": t}
        for k, (p, r, t) in values.items()
    }
    result = {"agg_value": utility_from_examples(by_index), "components": {}, "value_by_index": by_index}
    found = stats.examples(result)
    assert found.kind == "utility"
    counts = found.resample(50, seed=0)
    for g in np.unique(found.strata):  # each set keeps its own size in every resample
        assert (counts[:, found.strata == g].sum(axis=1) == 2).all()
    # a resample that draws retain/0 twice (and not retain/1) is the utility of that sample
    row = np.array([[1.0 if k != "retain/1" else 0.0 for k in found.keys]])
    row[0, found.keys.index("retain/0")] = 2.0
    doubled = {**by_index, "retain/1": by_index["retain/0"]}
    assert found.statistic(row)[0] == pytest.approx(utility_from_examples(doubled))


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
