"""Confidence intervals for hF, resampling near-duplicate groups (scipy.stats.bootstrap).

Products of one near-duplicate group (:mod:`prodcat.catalog.groups`) are not independent, so the
bootstrap resamples groups, not products: each group contributes the sum of its products'
hierarchical counts (:func:`prodcat.core.metrics.hierarchical_counts`) and a resample's hF is
computed from the summed counts (micro-averaged, like the point estimate). "A beats B" is decided
with a paired bootstrap: both models' counts on the same resampled groups, the interval of the
difference ``hF(A) - hF(B)``; a difference is *real* when that interval excludes 0.

Intervals are percentile intervals of ``n_resamples`` resamples (Efron & Tibshirani, 1993),
seeded, so a report is reproducible.

Letters: B products, G groups.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from prodcat.core.metrics import prf_from_counts

#: default number of bootstrap resamples and interval level
N_RESAMPLES, LEVEL = 1000, 0.95


def group_counts(counts: np.ndarray, groups) -> np.ndarray:
    """``[G, 3]`` summed hierarchical counts per group (``counts``: ``[B, 3]``; ``groups``: ``[B]``
    group ids, any hashable values)."""
    counts = np.asarray(counts, np.float64)
    _, index = np.unique(np.asarray(groups, object).astype(str), return_inverse=True)
    out = np.zeros((index.max() + 1 if len(index) else 0, 3))
    np.add.at(out, index, counts)
    return out


def _hf(common, n_pred, n_true, axis=-1):
    """hF of counts summed along ``axis`` (scipy's bootstrap passes resamples stacked)."""
    return prf_from_counts(*(np.sum(x, axis=axis) for x in (common, n_pred, n_true)))["hF"]


@dataclass
class Interval:
    """A point estimate with its ``level`` confidence interval (fractions in [0, 1])."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL

    def to_dict(self) -> dict:
        return asdict(self)

    def excludes_zero(self) -> bool:
        """True when the whole interval is above or below 0 (for a difference)."""
        return self.low > 0 or self.high < 0


def hf_interval(counts: np.ndarray, groups, n_resamples: int = N_RESAMPLES, seed: int = 0,
                level: float = LEVEL) -> Interval:
    """hF with a bootstrap interval over groups.

    Args:
        counts: ``[B, 3]`` per-product hierarchical counts.
        groups: ``[B]`` near-duplicate group of each product.

    Raises:
        ValueError: when ``counts`` and ``groups`` disagree in length.
    """
    from scipy.stats import bootstrap

    per_group = _per_group(counts, groups)
    estimate = float(_hf(*per_group.T))
    if len(per_group) < 2:
        return Interval(estimate, estimate, estimate, level)
    res = bootstrap(tuple(per_group.T), _hf, paired=True, vectorized=True,
                    n_resamples=n_resamples, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed))
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high),
                    level)


def paired_difference(counts_a: np.ndarray, counts_b: np.ndarray, groups,
                      n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """``hF(A) - hF(B)`` on the same products, with a paired bootstrap interval over groups.

    Raises:
        ValueError: when the inputs disagree in length.
    """
    from scipy.stats import bootstrap

    if len(counts_a) != len(counts_b):
        raise ValueError(f"{len(counts_a)} and {len(counts_b)} products: a paired comparison needs "
                         "both models' counts on the same products")
    a, b = _per_group(counts_a, groups), _per_group(counts_b, groups)

    def diff(ca, pa, ta, cb, pb, tb, axis=-1):
        return _hf(ca, pa, ta, axis) - _hf(cb, pb, tb, axis)

    estimate = float(diff(*a.T, *b.T))
    if len(a) < 2:
        return Interval(estimate, estimate, estimate, level)
    res = bootstrap((*a.T, *b.T), diff, paired=True, vectorized=True, n_resamples=n_resamples,
                    confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed))
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high),
                    level)


def verdict(difference: Interval, a: str, b: str) -> str:
    """A sentence a reader can act on: which of ``a`` and ``b`` is better, or that the data cannot
    tell them apart at this level."""
    d = difference
    span = f"{100 * d.estimate:+.2f} points [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
    if not d.excludes_zero():
        return f"no real difference between {a} and {b}: {span}"
    return f"{a} beats {b}: {span}" if d.low > 0 else f"{b} beats {a}: {span}"


def _per_group(counts, groups) -> np.ndarray:
    counts = np.asarray(counts, np.float64)
    if len(counts) != len(groups):
        raise ValueError(f"{len(counts)} count rows but {len(groups)} group ids")
    return group_counts(counts, groups)
