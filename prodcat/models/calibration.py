"""Confidence calibration of a hierarchical classifier: temperature scaling and its error.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks"): one scalar
T > 0 divides every level's logits before the softmax. It is fitted on the logits the service
computes (masked by the model's own predicted parents) so that the path confidence the cascade
routes on matches how often the output path is right (:func:`fit_temperature`). ECE (expected
calibration error, Naeini et al., 2015) and the reliability diagram measure what is left. Pure numpy: used by training (``calibration.json``) and by the
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


def path_confidence(logits: Sequence[np.ndarray], classes: np.ndarray, temperature: float) -> np.ndarray:
    """``[B]`` probability in [0, 1] of each output path: the product over its levels of
    ``softmax(logits / temperature)`` at the output class (0 for a product with no level).

    Args:
        logits: per level ``[B, C_l]`` logits as the model masked them for its own prediction
            (predicted parents: what the service computes).
        classes: ``[B, L]`` output class per level, ``-1`` below the path's depth.
    """
    conf = calibrated_confidence(logits, classes, temperature).astype(np.float64)  # [B, L], nan padded
    present = ~np.isnan(conf)
    return np.where(present.any(axis=1), np.prod(np.where(present, conf, 1.0), axis=1), 0.0)


def path_log_loss(logits: Sequence[np.ndarray], classes: np.ndarray, correct: np.ndarray,
                  temperature: float, eps: float = 1e-6) -> float:
    """Mean binary log loss (nats) of the path confidence against exact-path correctness."""
    conf = np.clip(path_confidence(logits, classes, temperature), eps, 1 - eps)
    correct = np.asarray(correct, bool)
    return float(-np.mean(np.where(correct, np.log(conf), np.log1p(-conf))))


def fit_temperature(logits: Sequence[np.ndarray], classes: np.ndarray, correct: np.ndarray,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T that calibrates the confidence the service reports and routes on.

    Temperature scaling (Guo et al., 2017) fitted where it is used: on the logits masked by the
    model's *predicted* parents (not teacher-forced ones), T minimises the log loss of the path
    confidence (:func:`path_confidence`) against whether the output path is exactly right; the
    search is scipy's bounded scalar minimisation over ``log T``.

    Args:
        logits: per level ``[B, C_l]`` serving logits of held-out products (the calibration split,
            never the rows early stopping saw).
        classes: ``[B, L]`` the output classes; correct: ``[B]`` bool, output path == true path.

    Returns:
        T > 0 (1.0 when there is nothing to fit: no products, or all right or all wrong).

    Raises:
        ValueError: when ``bounds`` is not an increasing positive pair.
    """
    from scipy.optimize import minimize_scalar

    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    correct = np.asarray(correct, bool)
    if len(correct) == 0 or correct.all() or not correct.any():
        return 1.0
    res = minimize_scalar(lambda log_t: path_log_loss(logits, classes, correct, math.exp(log_t)),
                          bounds=(math.log(lo), math.log(hi)), method="bounded",
                          options={"xatol": 1e-4})
    return float(math.exp(res.x))


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


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict[str, list]:
    """The reliability diagram's data over equal-width confidence bins: per bin the mean
    confidence, the accuracy and the number of products (empty bins left out)."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    out: dict[str, list] = {"confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        sel = which == b
        if sel.any():
            out["confidence"].append(float(confidence[sel].mean()))
            out["accuracy"].append(float(correct[sel].mean()))
            out["count"].append(int(sel.sum()))
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
