"""The two-stage cascade policy: the routing rule, the threshold choice, the trade-off curve.

Stage 1 is the light text model; stage 2 the multimodal model. A product goes to stage 2 when
stage 1's *calibrated* confidence is below a threshold ``tau``. Everything here is pure numpy on
arrays (no Ray, no torch), so the policy is tested on its own and shared by the Serve application
and the bulk scoring job.

Letters used in shapes: B products, L levels, C_l classes at level l, K points on a curve.

- Calibration: temperature scaling (:mod:`prodcat.models.calibration`).
- Confidence of a prediction: the probability of its whole path, the product of the calibrated
  per-level confidences (``path``); ``min`` and ``leaf`` are available too.
- Threshold: chosen on validation for a stated :class:`CascadeGoal`, e.g. the smallest escalation
  rate whose hF is within 0.5 points of escalating everything (multimodal-only).
- Hierarchical metrics: the one hF (:mod:`prodcat.core.metrics`); each product's
  :func:`~prodcat.core.metrics.hierarchical_counts` row, summed cumulatively, gives the hF of
  every escalation rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from prodcat.core.config import StrictModel
from prodcat.core.metrics import prf_from_counts

ConfidenceMode = Literal["path", "min", "leaf"]
ESCALATE_ALL = math.inf  # a threshold that sends every product to stage 2


def combine_confidence(level_confidence: np.ndarray, mode: ConfidenceMode = "path") -> np.ndarray:
    """One confidence per product from per-level confidences.

    Args:
        level_confidence: ``[B, L]`` probabilities in [0, 1]; ``nan`` (or ragged rows given as a
            list of lists) below a path's depth.
        mode: ``path`` = product over levels (probability of the whole path), ``min`` = the weakest
            level, ``leaf`` = the deepest level.

    Returns:
        ``[B]`` float64 in [0, 1]; 0 for a product with no levels (nothing predicted).

    Raises:
        ValueError: for an unknown mode.
    """
    conf = _as_matrix(level_confidence)
    present = ~np.isnan(conf)
    if mode == "path":
        out = np.prod(np.where(present, conf, 1.0), axis=1)
    elif mode == "min":
        out = np.min(np.where(present, conf, np.inf), axis=1)
    elif mode == "leaf":
        depth = present.sum(axis=1)
        out = np.where(depth > 0, conf[np.arange(len(conf)), np.maximum(depth - 1, 0)], 0.0)
    else:
        raise ValueError(f"unknown confidence mode {mode!r}; choose path, min or leaf")
    return np.where(present.any(axis=1), out, 0.0).astype(np.float64)


def _as_matrix(level_confidence) -> np.ndarray:
    if isinstance(level_confidence, np.ndarray) and level_confidence.dtype != object:
        return np.asarray(level_confidence, np.float64).reshape(len(level_confidence), -1)
    rows = [[] if r is None else list(r) for r in level_confidence]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = [np.nan if v is None else v for v in r]
    return out


# ---------------------------------------------------------------------- routing
def route(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """The routing rule: ``[B]`` bool, True where a product goes to stage 2.

    A product escalates when its calibrated stage-1 confidence is strictly below ``threshold``;
    a missing confidence (``nan``: stage 1 produced nothing) always escalates. ``threshold`` 0 keeps
    everything in stage 1, :data:`ESCALATE_ALL` (``inf``) sends everything to stage 2.

    Raises:
        ValueError: for a negative or ``nan`` threshold.
    """
    if not threshold >= 0:  # also catches nan
        raise ValueError(f"threshold must be >= 0 (inf = escalate all), got {threshold}")
    confidence = np.asarray(confidence, np.float64)
    return np.isnan(confidence) | (confidence < threshold)


# ---------------------------------------------------------------------- trade-off curve
@dataclass
class CascadeCurve:
    """hF against escalation rate, one point per distinct threshold (K points).

    Attributes:
        threshold: ``[K]`` increasing; point k escalates products with confidence < threshold[k]
            (the last one is ``inf``: everything escalates).
        escalation_rate: ``[K]`` fraction in [0, 1] of products sent to stage 2.
        hf, hp, hr: ``[K]`` micro-averaged hierarchical scores of the combined predictions.
        cost_ms: ``[K]`` expected cost per product (ms) = text cost + rate x multimodal cost.
        text_ms: stage-1 cost per product (ms; nan if unknown).
        multimodal_ms: stage-2 cost per escalated product inside the cascade (ms; nan if unknown).
    """

    threshold: np.ndarray
    escalation_rate: np.ndarray
    hf: np.ndarray
    hp: np.ndarray
    hr: np.ndarray
    cost_ms: np.ndarray
    text_ms: float = float("nan")
    multimodal_ms: float = float("nan")

    @property
    def text_only_hf(self) -> float:
        return float(self.hf[0])

    @property
    def multimodal_only_hf(self) -> float:
        return float(self.hf[-1])

    def at(self, threshold: float) -> dict:
        """The point a given threshold lands on (rate, hF, hP, hR, cost).

        Any tau in ``(threshold[k-1], threshold[k]]`` escalates the same products as ``threshold[k]``.
        """
        k = min(int(np.searchsorted(self.threshold, threshold, side="left")), len(self.threshold) - 1)
        return {"threshold": float(threshold), "escalation_rate": float(self.escalation_rate[k]),
                "hF": float(self.hf[k]), "hP": float(self.hp[k]), "hR": float(self.hr[k]),
                "cost_ms": float(self.cost_ms[k])}

    def to_dict(self, max_points: int = 201) -> dict:
        """JSON-ready, thinned to at most ``max_points`` points (first and last kept)."""
        keep = np.unique(np.linspace(0, len(self.threshold) - 1, min(max_points, len(self.threshold)))
                         .round().astype(int))
        def col(a):
            return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a)[keep]]
        return {"threshold": col(self.threshold), "escalation_rate": col(self.escalation_rate),
                "hF": col(self.hf), "hP": col(self.hp), "hR": col(self.hr), "cost_ms": col(self.cost_ms),
                "text_ms": _finite(self.text_ms), "multimodal_ms": _finite(self.multimodal_ms)}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def cascade_curve(confidence: np.ndarray, text_counts: np.ndarray, multimodal_counts: np.ndarray,
                  text_ms: float = float("nan"), multimodal_ms: float = float("nan")) -> CascadeCurve:
    """hF of the combined predictions for every threshold.

    Args:
        confidence: ``[B]`` calibrated stage-1 confidence (``nan`` always escalates).
        text_counts, multimodal_counts: ``[B, 3]`` per-product hierarchical counts
            (:func:`prodcat.core.metrics.hierarchical_counts`) of each stage's prediction
            against the same labels.
        text_ms: stage-1 cost per product (ms); multimodal_ms: stage-2 cost per escalated product
            in the cascade (ms, e.g. reusing stage 1's text vectors).

    Returns:
        A :class:`CascadeCurve` whose first point (threshold 0) escalates only products without a
        confidence and whose last escalates everything (threshold ``inf``).

    Raises:
        ValueError: when the three inputs disagree in length or are empty.
    """
    confidence = np.asarray(confidence, np.float64)
    t, m = np.asarray(text_counts, np.float64), np.asarray(multimodal_counts, np.float64)
    if not (len(confidence) == len(t) == len(m)) or len(confidence) == 0:
        raise ValueError("confidence and both count arrays need the same, non-zero number of products")
    conf = np.where(np.isnan(confidence), -np.inf, confidence)
    order = np.argsort(conf, kind="stable")
    sorted_conf = conf[order]
    # totals when the first k (lowest-confidence) products are escalated, k = 0..B
    delta = np.vstack([np.zeros((1, 3)), np.cumsum(m[order] - t[order], axis=0)])
    totals = t.sum(axis=0) + delta
    # reachable k: products with equal confidence escalate together; nan always escalates
    thresholds = np.unique(np.concatenate([[0.0], sorted_conf[np.isfinite(sorted_conf)], [ESCALATE_ALL]]))
    thresholds = thresholds[thresholds >= 0]
    ks = np.searchsorted(sorted_conf, thresholds, side="left")
    scores = prf_from_counts(totals[ks, 0], totals[ks, 1], totals[ks, 2])
    rate = ks / len(conf)
    text_cost = text_ms if np.isfinite(text_ms) else 0.0
    cost = text_cost + rate * (multimodal_ms if np.isfinite(multimodal_ms) else np.nan)
    return CascadeCurve(thresholds, rate, scores["hF"], scores["hP"], scores["hR"], cost, float(text_ms), float(multimodal_ms))


# ---------------------------------------------------------------------- threshold choice
class CascadeGoal(StrictModel):
    """What the threshold is chosen for, on the validation split."""

    kind: Literal["hf_within", "max_escalation", "min_hf"] = Field(
        "hf_within", description="hf_within: smallest escalation rate whose hF is within `value` "
        "hF points of multimodal-only; max_escalation: best hF with escalation rate <= `value`; "
        "min_hf: smallest escalation rate with hF >= `value`")
    value: float = Field(0.5, ge=0, description="hF points (0-100) for hf_within and min_hf; "
                         "a fraction in [0, 1] for max_escalation")

    def describe(self) -> str:
        return {"hf_within": f"smallest escalation rate with hF within {self.value:g} points of "
                             "multimodal-only",
                "max_escalation": f"best hF with escalation rate <= {self.value:.0%}",
                "min_hf": f"smallest escalation rate with hF >= {self.value:g}"}[self.kind]


def choose_threshold(curve: CascadeCurve, goal: CascadeGoal) -> tuple[float, int]:
    """The threshold (and its curve index) that meets ``goal``.

    When no point meets the goal (``min_hf`` too high), the best-hF point is returned.
    Ties go to the lower escalation rate (the cheaper cascade).
    """
    rate, hf = curve.escalation_rate, curve.hf
    if goal.kind == "max_escalation":
        ok = rate <= goal.value + 1e-12
        k = int(np.flatnonzero(ok)[np.argmax(hf[ok])]) if ok.any() else 0
    else:
        target = (curve.multimodal_only_hf - goal.value / 100 if goal.kind == "hf_within"
                  else goal.value / 100)
        ok = hf >= target - 1e-12
        k = int(np.flatnonzero(ok)[0]) if ok.any() else int(np.argmax(hf))
    return float(curve.threshold[k]), k


