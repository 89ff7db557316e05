"""The two-stage cascade policy: calibration, the routing rule, threshold choice, the trade-off curve.

Stage 1 is the light text model; stage 2 the multimodal model. A product goes to stage 2 when
stage 1's *calibrated* confidence is below a threshold ``tau``. Everything here is pure numpy on
arrays (no Ray, no torch), so the policy is tested on its own and shared by the Serve application
and the bulk scoring job.

Letters used in shapes: B products, L levels, C_l classes at level l, K points on a curve.

- Calibration: temperature scaling (Guo et al., 2017) fitted on the validation split by minimising
  the negative log-likelihood of the true class at every level (teacher-forced logits).
- Confidence of a prediction: the probability of its whole path, the product of the calibrated
  per-level confidences (``path``); ``min`` and ``leaf`` are available too.
- Threshold: chosen on validation for a stated :class:`CascadeGoal`, e.g. the smallest escalation
  rate whose hF is within 0.5 points of escalating everything (multimodal-only).
- Hierarchical metrics: micro-averaged hP/hR/hF over ancestor sets (root excluded), as in
  Kiritchenko et al. and HiClass; each product contributes ``|anc(pred) & anc(true)|``,
  ``|anc(pred)|`` and ``|anc(true)|``, so the hF of every escalation rate comes from cumulative sums.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from prodcat.config import StrictModel
from prodcat.taxonomy import Taxonomy

ConfidenceMode = Literal["path", "min", "leaf"]
ESCALATE_ALL = math.inf  # a threshold that sends every product to stage 2


# ---------------------------------------------------------------------- calibration
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


# ---------------------------------------------------------------------- hierarchical overlap
def path_overlap(taxonomy: Taxonomy, predicted_ids: Sequence, true_ids: Sequence) -> np.ndarray:
    """Per product ``[|anc(pred) & anc(true)|, |anc(pred)|, |anc(true)|]`` (root excluded).

    Args:
        predicted_ids: ``[B]`` category ids; ``None``/negative/unknown = nothing predicted.
        true_ids: ``[B]`` true category ids; ``None``/unknown = unlabelled (row is all zero).

    Returns:
        ``[B, 3]`` int64.
    """
    cache: dict[int, tuple[int, ...]] = {}

    def nodes(cid) -> tuple[int, ...]:
        if cid is None or (isinstance(cid, float) and math.isnan(cid)) or int(cid) <= 0:
            return ()
        cid = int(cid)
        if cid not in cache:
            try:
                cache[cid] = tuple(taxonomy.path_nodes(taxonomy.node(cid)))
            except KeyError:
                cache[cid] = ()
        return cache[cid]

    out = np.zeros((len(true_ids), 3), np.int64)
    for i, (p, t) in enumerate(zip(predicted_ids, true_ids)):
        tn = nodes(t)
        if not tn:
            continue
        pn = nodes(p)
        common = 0
        for a, b in zip(pn, tn):
            if a != b:
                break
            common += 1
        out[i] = (common, len(pn), len(tn))
    return out


def hierarchical_scores(overlap: np.ndarray) -> dict[str, float]:
    """Micro-averaged ``hP``, ``hR``, ``hF`` (fractions in [0, 1]) from :func:`path_overlap` rows."""
    inter, n_pred, n_true = (float(x) for x in np.asarray(overlap).sum(axis=0))
    hp = inter / n_pred if n_pred else 0.0
    hr = inter / n_true if n_true else 0.0
    hf = 2 * hp * hr / (hp + hr) if hp + hr else 0.0
    return {"hP": hp, "hR": hr, "hF": hf}


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


def cascade_curve(confidence: np.ndarray, text_overlap: np.ndarray, multimodal_overlap: np.ndarray,
                  text_ms: float = float("nan"), multimodal_ms: float = float("nan")) -> CascadeCurve:
    """hF of the combined predictions for every threshold.

    Args:
        confidence: ``[B]`` calibrated stage-1 confidence (``nan`` always escalates).
        text_overlap, multimodal_overlap: ``[B, 3]`` from :func:`path_overlap` for each stage's
            prediction against the same labels.
        text_ms: stage-1 cost per product (ms); multimodal_ms: stage-2 cost per escalated product
            in the cascade (ms, e.g. reusing stage 1's text vectors).

    Returns:
        A :class:`CascadeCurve` whose first point (threshold 0) escalates only products without a
        confidence and whose last escalates everything (threshold ``inf``).

    Raises:
        ValueError: when the three inputs disagree in length or are empty.
    """
    confidence = np.asarray(confidence, np.float64)
    t, m = np.asarray(text_overlap, np.float64), np.asarray(multimodal_overlap, np.float64)
    if not (len(confidence) == len(t) == len(m)) or len(confidence) == 0:
        raise ValueError("confidence and both overlaps need the same, non-zero number of products")
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
    inter, n_pred, n_true = totals[ks, 0], totals[ks, 1], totals[ks, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        hp = np.where(n_pred > 0, inter / n_pred, 0.0)
        hr = np.where(n_true > 0, inter / n_true, 0.0)
        hf = np.where(hp + hr > 0, 2 * hp * hr / (hp + hr), 0.0)
    rate = ks / len(conf)
    text_cost = text_ms if np.isfinite(text_ms) else 0.0
    cost = text_cost + rate * (multimodal_ms if np.isfinite(multimodal_ms) else np.nan)
    return CascadeCurve(thresholds, rate, hf, hp, hr, cost, float(text_ms), float(multimodal_ms))


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


# ---------------------------------------------------------------------- the cascade spec
@dataclass
class CascadeSpec:
    """The cascade as deployed: which two checkpoints, their temperatures, and tau.

    Stored as ``cascade.json`` (next to the report and the curve). ``threshold`` is compared with
    the stage-1 path confidence after temperature scaling by ``text_temperature``.
    """

    text_model: str
    multimodal_model: str
    threshold: float
    text_temperature: float = 1.0
    multimodal_temperature: float = 1.0
    confidence_mode: str = "path"
    goal: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["threshold"] = "inf" if math.isinf(self.threshold) else self.threshold
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "CascadeSpec":
        data = json.loads(text)
        data["threshold"] = float(data["threshold"])
        return cls(**data)
