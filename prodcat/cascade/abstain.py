"""Abstention: answers that stop at the deepest level the model is sure of (pure numpy).

A model outputs a full path, level by level, with a calibrated confidence per level (the
probability of that level's class given the level above). The *cumulative* confidence of level k,
the product of the confidences down to k, is the probability that the path down to k is right.
Here a partial answer keeps level k when the cumulative confidence of every level down to k reaches
that level's threshold; it stops at the first level that does not, and says so.

The thresholds are chosen on the calibration split for a *target precision per level*: for level
k, among the products whose answer reaches k (they passed the levels above), the smallest
threshold such that the products it keeps have their level-k node right at least ``target`` of
the time (the largest such set). A level whose calibration products never reach the target gets
no threshold (``inf``: answers stop above it). Precision thus rises and recall falls as the target
moves, and the one strict hF (:mod:`prodcat.core.metrics`) scores the partial path as output.

``prodcat cascade fit`` stores a table of thresholds for a grid of targets per stage
(:func:`fit_table`) in ``cascade.json``; the service, bulk scoring and :class:`prodcat.cascade.stage.
StageRunner` look a target up in it (:func:`thresholds_for`) and stop each answer with
:func:`stop_level`. The default (no target) keeps today's full paths.

Letters: B products, L taxonomy levels, K targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prodcat.core.metrics import hierarchical_counts, node_paths, prf_from_counts
from prodcat.core.taxonomy import Taxonomy

#: the targets a fitted table holds: 0 (keep everything) and 0.50 ... 0.99 by 0.01, 0.995, 0.999;
#: a requested target uses the smallest of them at or above it (never a weaker guarantee)
TARGET_GRID = (0.0,) + tuple(round(0.5 + 0.01 * i, 2) for i in range(50)) + (0.995, 0.999)
COMPLETE = "complete: every level reaches its threshold"


def check_target(target: float) -> float:
    """``target`` as a float in [0, 1].

    Raises:
        ValueError: for a target outside [0, 1] (or not a number).
    """
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ValueError(f"the target precision must be a number in [0, 1], got {target!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"the target precision must be in [0, 1] (a share of right answers per "
                         f"level, e.g. 0.95), got {value}")
    return value


@dataclass
class Levels:
    """The real levels of B output paths (a virtual "X itself" leaf merged into the level above,
    as :class:`prodcat.cascade.stage.StageRunner` shows a path).

    Attributes:
        nodes: ``[B, L]`` int64 taxonomy node of each real level, -1 padded.
        confidence: ``[B, L]`` float64 calibrated confidence of each real level, nan padded.
        column_level: ``[B, L]`` int64 the real level each output column belongs to (-1 for an
            empty column), to cut the per-level classes at a depth.
    """

    nodes: np.ndarray
    confidence: np.ndarray
    column_level: np.ndarray

    @property
    def depth(self) -> np.ndarray:
        """``[B]`` number of real levels output."""
        return (self.nodes >= 0).sum(axis=1)

    @property
    def cumulative(self) -> np.ndarray:
        """``[B, L]`` product of the confidences down to each level (nan below the depth)."""
        return np.cumprod(np.where(np.isnan(self.confidence), 1.0, self.confidence), axis=1) \
            * np.where(np.isnan(self.confidence), np.nan, 1.0)


def real_levels(taxonomy: Taxonomy, classes: np.ndarray, level_confidence: np.ndarray) -> Levels:
    """:class:`Levels` of output classes ``[B, L]`` (-1 padded) with their per-level confidences
    ``[B, L]`` (values in [0, 1]; ignored where the class is -1).

    Raises:
        ValueError: when the shapes differ or are not ``[B, L]``.
    """
    classes = np.asarray(classes, np.int64)
    conf = np.asarray(level_confidence, np.float64)
    if classes.ndim != 2 or classes.shape != conf.shape or classes.shape[1] != taxonomy.num_levels:
        raise ValueError(f"classes and level_confidence must both be [B, L={taxonomy.num_levels}], "
                         f"got {classes.shape} and {conf.shape}")
    b, width = classes.shape
    nodes = np.full((b, width), -1, np.int64)
    out = np.full((b, width), np.nan)
    column_level = np.full((b, width), -1, np.int64)
    pos = np.zeros(b, np.int64)
    rows = np.arange(b)
    for level, level_nodes in enumerate(taxonomy.level_nodes):
        cls = classes[:, level]
        valid = cls >= 0
        node = level_nodes[cls.clip(0, len(level_nodes) - 1)] if len(level_nodes) else np.zeros(b, np.int64)
        c = np.where(np.isnan(conf[:, level]), 1.0, conf[:, level])
        merge = valid & taxonomy.virtual[node] & (pos > 0)
        add = valid & ~merge
        out[rows[merge], pos[merge] - 1] *= c[merge]
        column_level[merge, level] = pos[merge] - 1
        nodes[rows[add], pos[add]] = node[add]
        out[rows[add], pos[add]] = c[add]
        column_level[add, level] = pos[add]
        pos += add
    return Levels(nodes, out, column_level)


def correct_levels(taxonomy: Taxonomy, levels: Levels, true_nodes) -> np.ndarray:
    """``[B, L]`` bool: the real level's node is on the true path (False below the depth)."""
    true = node_paths(taxonomy, np.asarray(true_nodes, np.int64))                  # [B, L]
    n = levels.nodes
    return ((n[:, :, None] == true[:, None, :]) & (n[:, :, None] >= 0)).any(axis=2)


def fit_thresholds(cumulative: np.ndarray, correct: np.ndarray, target: float) -> np.ndarray:
    """Per level ``[L]`` the smallest cumulative confidence whose kept products reach ``target``
    precision at that level, level by level among the products that passed the levels above
    (``inf`` where no threshold does, or no product reaches the level).

    Args:
        cumulative: ``[B, L]`` cumulative confidences (nan below a path's depth).
        correct: ``[B, L]`` bool, the level's node is right.
        target: precision in [0, 1].

    Raises:
        ValueError: for a target outside [0, 1].
    """
    target = check_target(target)
    cumulative = np.asarray(cumulative, np.float64)
    b, width = cumulative.shape
    thresholds = np.full(width, np.inf)
    alive = np.ones(b, bool)
    for level in range(width):
        reach = alive & ~np.isnan(cumulative[:, level])
        conf, right = cumulative[reach, level], np.asarray(correct)[reach, level]
        if not len(conf):
            break
        order = np.argsort(-conf, kind="stable")
        conf, right = conf[order], right[order]
        precision = np.cumsum(right) / np.arange(1, len(conf) + 1)
        # a threshold keeps every product at or above it: only the last of equal values counts
        last = np.r_[conf[1:] != conf[:-1], True]
        ok = np.flatnonzero(last & (precision >= target - 1e-12))
        if not len(ok):
            break
        thresholds[level] = conf[ok[-1]]
        alive = reach & (cumulative[:, level] >= thresholds[level])
    return thresholds


def kept_depth(cumulative: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``[B]`` the number of levels kept: levels pass while their cumulative confidence reaches
    the threshold (``thresholds``: ``[L]`` or ``[B, L]``; nan/None read as ``inf``)."""
    cumulative = np.asarray(cumulative, np.float64)
    t = np.broadcast_to(np.asarray(thresholds, np.float64), cumulative.shape)
    t = np.where(np.isnan(t), np.inf, t)
    passed = ~np.isnan(cumulative) & (np.nan_to_num(cumulative, nan=-1.0) >= t)
    return np.cumprod(passed, axis=1).sum(axis=1)


def truncate_classes(levels: Levels, classes: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The output classes ``[B, L]`` cut to ``depth`` ``[B]`` real levels (-1 below)."""
    keep = (levels.column_level >= 0) & (levels.column_level < np.asarray(depth)[:, None])
    return np.where(keep, np.asarray(classes, np.int64), -1)


def stop_level(confidences: list[float], thresholds) -> tuple[int, str]:
    """Where one answer stops: ``(levels kept, reason)``.

    Args:
        confidences: the per-level confidences of one answer's real levels (top first), e.g. the
            ``confidence`` of each entry of a service answer's ``path``.
        thresholds: ``[L]`` cumulative-confidence thresholds (None or nan: never reached).
    """
    cumulative = 1.0
    for level, c in enumerate(confidences):
        cumulative *= float(c)
        t = thresholds[level] if level < len(thresholds) else None
        t = math.inf if t is None or (isinstance(t, float) and math.isnan(t)) else float(t)
        if cumulative < t:
            need = "no threshold reaches the target on the calibration split" if math.isinf(t) \
                else f"below the {t:.3f} the target needs"
            return level, f"level {level}: cumulative confidence {cumulative:.3f} {need}"
    return len(confidences), COMPLETE


# ------------------------------------------------------------------------------ tables and curves
def fit_table(taxonomy: Taxonomy, classes: np.ndarray, level_confidence: np.ndarray, true_nodes,
              targets=TARGET_GRID) -> dict:
    """Thresholds for every target (JSON-ready): ``{"targets": [K], "thresholds": [K][L]}``
    (None where a level is never kept), fitted on the given (calibration) products."""
    levels = real_levels(taxonomy, classes, level_confidence)
    correct = correct_levels(taxonomy, levels, true_nodes)
    cumulative = levels.cumulative
    table = [[None if math.isinf(t) else round(float(t), 6)
              for t in fit_thresholds(cumulative, correct, target)] for target in targets]
    return {"targets": [float(t) for t in targets], "thresholds": table, "products": int(len(classes))}


def thresholds_for(table: dict, target: float) -> list[float | None]:
    """The thresholds ``[L]`` of the smallest fitted target at or above ``target``.

    Raises:
        ValueError: for a target outside [0, 1], or above the table's largest target.
    """
    target = check_target(target)
    targets = np.asarray(table["targets"], np.float64)
    above = np.flatnonzero(targets >= target - 1e-12)
    if not len(above):
        raise ValueError(f"target precision {target} is above the largest fitted one "
                         f"({targets.max():g}); choose a target up to it")
    k = int(above[np.argmin(targets[above])])
    return list(table["thresholds"][k])


def as_array(thresholds) -> np.ndarray:
    """``[L]`` float thresholds with None as ``inf``."""
    return np.asarray([np.inf if t is None else float(t) for t in thresholds], np.float64)


def curve_points(taxonomy: Taxonomy, classes: np.ndarray, level_confidence: np.ndarray, true_nodes,
                 thresholds_by_target: dict[float, np.ndarray]) -> list[dict]:
    """hP, hR, hF and coverage of partial answers on labelled products for each target.

    Args:
        classes, level_confidence: ``[B, L]`` the products' full outputs.
        true_nodes: ``[B]`` label nodes.
        thresholds_by_target: ``{target: [L] or [B, L] thresholds}``; a target of None scores
            the full paths.

    Returns:
        one dict per target: ``target``, ``hP``, ``hR``, ``hF``, ``full_paths`` (share of products
        answered to their full depth), ``answered`` (share with at least one level),
        ``depth_share`` (kept levels over output levels), ``products``.
    """
    levels = real_levels(taxonomy, classes, level_confidence)
    full = levels.depth
    out = []
    for target, thresholds in thresholds_by_target.items():
        depth = full if target is None else kept_depth(levels.cumulative, thresholds)
        cut = truncate_classes(levels, classes, depth)
        counts = hierarchical_counts(taxonomy, true_nodes, cut).sum(axis=0)
        scores = prf_from_counts(*counts)
        n = max(len(full), 1)
        out.append({"target": target, **{k: round(float(v), 6) for k, v in scores.items()},
                    "full_paths": round(float((depth == full).sum() / n), 6),
                    "answered": round(float((depth > 0).sum() / n), 6),
                    "depth_share": round(float(depth.sum() / max(full.sum(), 1)), 6),
                    "products": int(len(full))})
    return out


#: the targets a curve shows (hP against hR as the target moves)
CURVE_TARGETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


def curve(taxonomy: Taxonomy, table: dict, classes: np.ndarray, level_confidence: np.ndarray,
          true_nodes, targets=CURVE_TARGETS) -> list[dict]:
    """:func:`curve_points` for the full paths (target None) and each of ``targets`` looked up in a
    fitted ``table`` (:func:`fit_table`)."""
    by_target: dict = {None: None}
    for target in targets:
        by_target[float(target)] = as_array(thresholds_for(table, target))
    return curve_points(taxonomy, classes, level_confidence, true_nodes, by_target)
