"""metrics/bootstrap.py and the registry's intervals: bootstrap intervals against exactly enumerated
bootstrap distributions, PrivLeak's stratified resampling, TOFU's KS and utility resampling, each as
its registered metric builds its examples."""

from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from helpers import mean_cell, privleak_cell
from sklearn.metrics import roc_auc_score

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import EvalContext, bootstrap, evaluate, examples, metric_ci


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
    assert metric_ci(cell, resamples=10_000, confidence=0.8) == [1.0, 5.0]
    assert metric_ci(cell, resamples=10_000) == [0.0, 6.0]


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
    assert metric_ci(cell, resamples=10_000, confidence=0.8) == [low, high] == [-100.0, 0.0]


def test_privleak_resamples_keep_both_classes_and_the_reference_fixed() -> None:
    cell = privleak_cell([0.1, 0.5, 0.2], [0.4, 0.9], reference_auc=0.6)
    found = examples(cell)
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
    assert (
        metric_ci(
            {"metric": "privleak", "agg_value": 0.0, "reference_auc": 0.5, "value_by_index": members_only}
        )
        is None
    )


def test_weighted_auc_equals_sklearn_on_the_repeated_sample_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=9).astype(float)  # many ties
    member = np.arange(9) < 4
    counts = rng.integers(1, 4, size=(30, 9))
    expected = [roc_auc_score(np.repeat(member, row), np.repeat(scores, row)) for row in counts]
    assert bootstrap.weighted_auc(scores, member, counts) == pytest.approx(expected)


def test_constant_metric_has_a_zero_width_interval() -> None:
    assert metric_ci(mean_cell([40.0] * 7)) == [40.0, 40.0]
    # every member scores below every non-member in every resample: AUC 0, PrivLeak −100
    assert metric_ci(privleak_cell([0.1, 0.2], [0.8, 0.9])) == [-100.0, -100.0]


def test_seed_reproduces_and_another_seed_differs() -> None:
    cell = mean_cell(list(np.random.default_rng(1).uniform(0, 100, size=20)))
    assert metric_ci(cell, seed=0) == metric_ci(cell, seed=0)
    assert metric_ci(cell, seed=0) != metric_ci(cell, seed=1)


def test_values_that_do_not_reproduce_the_agg_value_give_no_interval() -> None:
    assert metric_ci(mean_cell([1.0, 2.0]) | {"agg_value": 52.0}) is None
    assert metric_ci({"agg_value": 3.0, "value_by_index": {}}) is None
    assert metric_ci({"agg_value": float("nan"), "value_by_index": {}}) is None


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
    for name, result in results.items():  # a bare result: its metric is named (a results line names it)
        assert result["ci"] == metric_ci(result, metric=name) and result["ci"][0] <= result["ci"][1]


def test_tofu_forget_quality_resamples_the_truth_ratios_against_the_fixed_reference() -> None:
    from scipy.stats import ks_2samp

    ratios, reference = [0.1, 0.2, 0.35, 0.9], [0.5, 0.6, 0.7]
    result = {
        "metric": "tofu_forget_quality",
        "agg_value": ks_2samp(ratios, reference).pvalue,
        "reference_truth_ratios": reference,
        "value_by_index": {str(i): {"truth_ratio": r} for i, r in enumerate(ratios)},
    }
    found = examples(result)
    assert found.kind == "ks"
    # one resample, by hand: example 0 twice, 1 not, 2 once, 3 once -> [0.1, 0.1, 0.35, 0.9]
    row = np.array([[2.0, 0.0, 1.0, 1.0]])
    assert found.statistic(row)[0] == pytest.approx(ks_2samp([0.1, 0.1, 0.35, 0.9], reference).pvalue)
    ci = metric_ci(result, resamples=200, seed=3)
    assert ci == metric_ci(result, resamples=200, seed=3) and 0 <= ci[0] <= result["agg_value"] <= ci[1] <= 1


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
    result = {
        "metric": "tofu_model_utility",
        "agg_value": utility_from_examples(by_index),
        "components": {},
        "value_by_index": by_index,
    }
    found = examples(result)
    assert found.kind == "utility"
    counts = found.resample(50, seed=0)
    for g in np.unique(found.strata):  # each set keeps its own size in every resample
        assert (counts[:, found.strata == g].sum(axis=1) == 2).all()
    # a resample that draws retain/0 twice (and not retain/1) is the utility of that sample
    row = np.array([[1.0 if k != "retain/1" else 0.0 for k in found.keys]])
    row[0, found.keys.index("retain/0")] = 2.0
    doubled = {**by_index, "retain/1": by_index["retain/0"]}
    assert found.statistic(row)[0] == pytest.approx(utility_from_examples(doubled))
