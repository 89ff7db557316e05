"""Confidence calibration of a hierarchical classifier: temperature scaling and its error.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks"): one scalar
T > 0 divides every level's logits before the softmax; it is fitted by minimising the negative
log-likelihood of the true class at every level. ECE (expected calibration error, Naeini et al.,
2015) measures what is left. Pure numpy: used by training (``calibration.json``) and by the
cascade fit, with no torch needed.

Letters: B products, L levels, C_l classes at level l.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``[B, C]``; ``-inf`` entries (masked classes) stay ``-inf``."""
    top = np.max(z, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    shifted = z - top
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def temperature_nll(logits: Sequence[np.ndarray], targets: np.ndarray, temperature: float) -> float:
    """Mean NLL (nats) of the target classes under ``softmax(logits / temperature)``.

    Args:
        logits: per level ``[B, C_l]`` float logits (``-inf`` for masked classes).
        targets: ``[B, L]`` int class per level, ``-1`` where the path stops (ignored).
        temperature: T > 0.

    Returns:
        The mean over valid (product, level) pairs whose target logit is finite; ``nan`` if none.
    """
    total, count = 0.0, 0
    for level, z in enumerate(logits):
        z = np.asarray(z, np.float64)
        t = np.asarray(targets)[:, level]
        valid = t >= 0
        if not valid.any():
            continue
        rows = np.flatnonzero(valid)
        logp = _log_softmax(z[rows] / temperature)[np.arange(len(rows)), t[rows]]
        finite = np.isfinite(logp)
        total -= float(logp[finite].sum())
        count += int(finite.sum())
    return total / count if count else float("nan")


def fit_temperature(logits: Sequence[np.ndarray], targets: np.ndarray,
                    bounds: tuple[float, float] = (0.05, 20.0), iters: int = 60) -> float:
    """The temperature T that minimises the validation NLL (temperature scaling).

    The NLL is convex in ``beta = 1/T`` (log-sum-exp of a linear function minus a linear term), so a
    golden-section search over ``beta`` finds the optimum within ``bounds``.

    Args:
        logits: per level ``[B, C_l]`` logits of the validation products (teacher-forced masking).
        targets: ``[B, L]`` true class per level, ``-1`` padded.
        bounds: the range of T searched.

    Returns:
        T > 0 (1.0 when there is nothing to fit).

    Raises:
        ValueError: when ``bounds`` is not an increasing positive pair.
    """
    lo_t, hi_t = bounds
    if not 0 < lo_t < hi_t:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    if not np.isfinite(temperature_nll(logits, targets, 1.0)):
        return 1.0
    lo, hi = 1.0 / hi_t, 1.0 / lo_t  # search beta = 1/T
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = (temperature_nll(logits, targets, 1.0 / x) for x in (a, b))
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = temperature_nll(logits, targets, 1.0 / a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = temperature_nll(logits, targets, 1.0 / b)
    return float(1.0 / ((lo + hi) / 2))


def calibrated_confidence(logits: Sequence[np.ndarray], classes: np.ndarray,
                          temperature: float) -> np.ndarray:
    """``[B, L]`` probability in [0, 1] of each predicted class under ``softmax(logits / T)``.

    Args:
        logits: per level ``[B, C_l]`` logits (as the model masked them for its own prediction).
        classes: ``[B, L]`` predicted class per level, ``-1`` below the path's depth.

    Returns:
        ``[B, L]`` float32, ``nan`` where ``classes`` is ``-1``.
    """
    classes = np.asarray(classes)
    out = np.full(classes.shape, np.nan, np.float32)
    for level, z in enumerate(logits):
        c = classes[:, level]
        rows = np.flatnonzero(c >= 0)
        if len(rows):
            logp = _log_softmax(np.asarray(z, np.float64)[rows] / temperature)
            out[rows, level] = np.exp(logp[np.arange(len(rows)), c[rows]])
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the bin-weighted mean of ``|accuracy - mean confidence|`` over equal-width bins.

    Args:
        confidence: ``[B]`` in [0, 1]; correct: ``[B]`` bool (e.g. exact path match).

    Returns:
        ECE in [0, 1] (0.0 for an empty input).
    """
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    if len(confidence) == 0:
        return 0.0
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)
