"""Bootstrap primitives of a metric cell: its examples, their resampling, the interval of its
agg_value (METHODS.md, "Confidence and verdict"). Pure functions of a result; nothing here reads
files or models, or knows a metric by name: each metric says how its examples are built
(`Metric.bootstrap`, `registry.py`) and registers the statistic of its own kind (`register_statistic`).
The verdict that `audit/stats.py` draws from these intervals lives there.

Every interval is a percentile bootstrap: B resamples (default 1,000) of a cell's examples with
replacement, drawn by `numpy.random.default_rng(seed)` created afresh in each call (so an interval
depends only on its inputs and the seed, not on what was computed before), and the (1 − c)/2 and
(1 + c)/2 percentiles (numpy's linear interpolation) of the B resampled statistics, c = 0.95.
Resamples are count matrices (`Examples`), so every statistic is vectorised over all B at once.

- `mean` (VerbMem, KnowMem, TOFU's probability, ROUGE, truth ratio): the statistic is the cell's
  agg_value by its own definition, the mean of the per-example `score`.
- A metric whose examples are strata (PrivLeak's forget and holdout passages, TOFU utility's sets)
  is resampled within each stratum, each to its own count, so every stratum is present in every
  resample; a fixed `reference` (PrivLeak's AUC_ref, the retain model's truth ratios) is never
  resampled: the interval is the uncertainty of this model on these examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0
Interval = tuple[float, float]


@dataclass(frozen=True)
class Examples:
    """A cell's per-example values in index order, and how its aggregate is computed from them:
    `kind` names the statistic (`STATISTICS`: `mean` here, the others registered by their metric's
    file), `strata` (optional) the group of each example, `reference` (optional) a fixed reference
    the statistic compares with (never resampled).

    Examples are resampled within each stratum (each to its own count), so every class or set stays
    present. A resample is kept as counts: how often each example is among the indices drawn with
    replacement ([B, n]), so a statistic is a matrix product over all B resamples at once, and one
    count matrix applied to several cells is an exactly paired resampling.
    """

    keys: tuple[str, ...]
    scores: np.ndarray
    kind: str = "mean"
    strata: np.ndarray | None = None
    reference: Any = None

    def resample(self, resamples: int, seed: int) -> np.ndarray:
        """[resamples, n] counts, drawn within each stratum."""
        if self.strata is None:
            return _counts((len(self.scores),), resamples, seed)
        groups = np.unique(self.strata)
        drawn = _counts(tuple(int((self.strata == g).sum()) for g in groups), resamples, seed)
        counts, start = np.empty_like(drawn), 0
        for g in groups:
            where = self.strata == g
            counts[:, where] = drawn[:, start : start + int(where.sum())]
            start += int(where.sum())
        return counts

    def statistic(self, counts: np.ndarray) -> np.ndarray:
        """The cell's aggregate on each row of `counts` ([B, n] from `resample`; ones = the sample)."""
        return STATISTICS[self.kind](self, counts)


#: a statistic: (examples, counts [B, n] or [n]) -> the aggregate of each resample ([B] or [])
Statistic = Callable[[Examples, np.ndarray], np.ndarray]
#: kind -> statistic; a metric file registers the kind its `bootstrap` builds
STATISTICS: dict[str, Statistic] = {}
#: how a metric builds its Examples from its result: (keys in index order, their value_by_index
#: rows, the whole result) -> Examples; a KeyError, TypeError or ValueError (or None) means none
Builder = Callable[[tuple[str, ...], Sequence[Mapping[str, Any]], Mapping[str, Any]], "Examples | None"]


def register_statistic(kind: str) -> Callable[[Statistic], Statistic]:
    def add(fn: Statistic) -> Statistic:
        if kind in STATISTICS:
            raise ValueError(f"statistic {kind!r} is registered twice")
        STATISTICS[kind] = fn
        return fn

    return add


@register_statistic("mean")
def mean_statistic(found: Examples, counts: np.ndarray) -> np.ndarray:
    return counts @ found.scores / len(found.scores)


def mean_examples(
    keys: tuple[str, ...], rows: Sequence[Mapping[str, Any]], result: Mapping[str, Any]
) -> Examples:
    """The default bootstrap: agg_value is the plain mean of each example's `score`."""
    return Examples(keys, np.array([float(r["score"]) for r in rows]))


@lru_cache(maxsize=32)
def _counts(sizes: tuple[int, ...], resamples: int, seed: int) -> np.ndarray:
    """[resamples, Σ sizes] float counts (for BLAS products): each block of `sizes` columns is k indices
    drawn with replacement among its own k, counted. Cached: every cell of one shape shares it."""
    rng = np.random.default_rng(seed)
    blocks = []
    for k in sizes:
        drawn = rng.integers(0, k, size=(resamples, k)) + k * np.arange(resamples)[:, None]
        blocks.append(np.bincount(drawn.ravel(), minlength=resamples * k).reshape(resamples, k))
    counts = np.concatenate(blocks, axis=1).astype(float)
    counts.flags.writeable = False
    return counts


def weighted_auc(scores: np.ndarray, member: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row of `counts`: the ROC AUC (members labelled 1, ties counting ½, as sklearn's
    roc_auc_score) of the sample holding example i counts[i] times, i.e.
    Σ_i c_i (w(o < s_i) + w(o ≤ s_i)) / 2 / (m·o) over members i, w(·) the drawn weight of the
    non-members below (not above) s_i, m and o the numbers of members and non-members drawn;
    w from cumulative counts over the sorted non-member scores: O(B·n), no B × m × o product."""
    members, others = scores[member], scores[~member]
    order = np.argsort(others)
    co = counts[..., ~member][..., order]
    cumulative = np.concatenate([np.zeros((*co.shape[:-1], 1)), np.cumsum(co, axis=-1)], axis=-1)
    below = cumulative[..., np.searchsorted(others[order], members, side="left")]
    not_above = cumulative[..., np.searchsorted(others[order], members, side="right")]
    cm = counts[..., member]
    return (cm * (below + not_above) / 2).sum(axis=-1) / (cm.sum(axis=-1) * co.sum(axis=-1))


def collect(result: Mapping[str, Any], build: Builder = mean_examples) -> Examples | None:
    """The per-example values behind `result`'s agg_value, as `build` makes them, or None when there
    are none (a metric without them, an empty split, a row `build` cannot read) or they do not
    reproduce the agg_value (then an interval of them would not be an interval of the stored value)."""
    by_index = result.get("value_by_index") or {}
    agg = result.get("agg_value")
    if not by_index or agg is None or not np.isfinite(agg):
        return None
    keys = tuple(sorted(by_index, key=_index_order))
    try:
        found = build(keys, [by_index[k] for k in keys], result)
    except (KeyError, TypeError, ValueError):
        return None
    if found is None:
        return None
    point = float(found.statistic(np.ones(len(keys))))
    return found if abs(point - agg) <= 1e-6 * max(1.0, abs(agg)) else None


def _index_order(key: Any) -> tuple[str, int]:
    # value_by_index keys are example numbers, or "<set>/<number>" for TOFU's model utility
    text = str(key)
    prefix, _, number = text.rpartition("/")
    return (prefix, int(number))


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> Interval | None:
    """The percentile interval of the finite `samples` (NaN/inf ones dropped); None if none is."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None
    lo, hi = np.percentile(finite, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def interval(
    found: Examples | None, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED
) -> list[float] | None:
    """[low, high] percentile-bootstrap interval of the statistic of `found`; None without examples."""
    if found is None:
        return None
    found_interval = percentile_interval(found.statistic(found.resample(resamples, seed)), confidence)
    return None if found_interval is None else list(found_interval)
