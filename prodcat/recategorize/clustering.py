"""Cascade clustering: HDBSCAN, then too large or too mixed clusters re-clustered one level down.

Level 1 runs HDBSCAN (Campello et al. 2013; the ``hdbscan`` library of McInnes et al., for its
soft clustering) on the UMAP-reduced representation of a category's products. Points HDBSCAN
leaves as noise join the cluster of their largest soft-membership probability
(``hdbscan.all_points_membership_vectors``) when it is at least ``soft_threshold``; the others
stay unassigned (cluster -1) and are counted, never hidden: forcing every outlier into a cluster
degrades the clusters (BERTopic's users see 25–50 % of their documents in its outlier topic).

The cascade step, label-free (the reference labels are only used to score): a level-1 cluster is
re-clustered when it is

- *too large*: it holds more than ``max_share`` of the category's products, or
- *too mixed*: its mean cosine distance to its centroid, in the representation, is more than
  ``max_spread`` times the median cluster's,

and has at least ``2 * min_cluster_size`` products. Its members get their own UMAP (fitted on
them alone, so the reduction spends its dimensions on their differences) and HDBSCAN with the
same settings; the split is kept when it yields at least two clusters, and its noise points are
handled as at level 1. ``max_depth`` bounds the recursion (1: one level down).

Letters: B products, H representation dimension, d reduced dimension, K clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hdbscan
import numpy as np

from prodcat.recategorize.config import NOISE, ClusterSettings, UMAPSettings
from prodcat.recategorize.reduce import MIN_PRODUCTS, reduce


@dataclass
class Level:
    """One HDBSCAN run: ``labels [B]`` (-1 noise, after soft assignment), ``probability [B]``
    (HDBSCAN's membership strength, or the soft-membership probability for a rescued noise
    point; 0 for noise) and ``rescued [B]`` bool (noise that joined a cluster)."""

    labels: np.ndarray
    probability: np.ndarray
    rescued: np.ndarray


@dataclass
class Clustering:
    """The cascade's result.

    Attributes:
        labels: ``[B]`` final cluster per product (0..K-1, largest first), -1 unassigned.
        first_level: ``[B]`` the level-1 clusters (same noise handling): the "no cascade" result.
        parent: final cluster → its level-1 cluster.
        probability: ``[B]`` membership strength in [0, 1] (0 when unassigned).
        rescued: products HDBSCAN called noise that joined a cluster by soft membership.
        splits: level-1 cluster → why it was re-clustered and into how many clusters.
        min_cluster_size: the HDBSCAN ``min_cluster_size`` used (see
            :func:`effective_min_cluster_size`).
    """

    labels: np.ndarray
    first_level: np.ndarray
    parent: dict[int, int]
    probability: np.ndarray
    rescued: int
    splits: dict[int, dict] = field(default_factory=dict)
    min_cluster_size: int = 0

    @property
    def noise_share(self) -> float:
        """Share in [0, 1] of unassigned products."""
        return float((self.labels == NOISE).mean()) if len(self.labels) else 0.0


def effective_min_cluster_size(n: int, settings: ClusterSettings) -> int:
    """``min_cluster_size`` for a category of ``n`` products: the setting, but at most a tenth of
    the products (and at least 5), so a small category (a sample) can still show subtypes."""
    return min(settings.min_cluster_size, max(5, n // 10))


def hdbscan_level(points: np.ndarray, settings: ClusterSettings) -> Level:
    """HDBSCAN on ``points [B, d]`` plus the soft-membership rule for its noise points."""
    n = len(points)
    size = min(settings.min_cluster_size, max(2, n // 2))
    model = hdbscan.HDBSCAN(min_cluster_size=size, min_samples=settings.min_samples,
                            cluster_selection_method=settings.selection, prediction_data=True)
    labels = model.fit_predict(points).astype(np.int64)
    probability = np.asarray(model.probabilities_, np.float64).copy()
    rescued = np.zeros(n, bool)
    k = int(labels.max()) + 1
    noise = labels == NOISE
    if k > 0 and noise.any() and settings.soft_threshold < 1:
        member = np.asarray(hdbscan.all_points_membership_vectors(model), np.float64).reshape(n, -1)
        best, best_p = member.argmax(axis=1), member.max(axis=1)
        rescued = noise & (best_p >= settings.soft_threshold)
        labels[rescued], probability[rescued] = best[rescued], best_p[rescued]
    probability[labels == NOISE] = 0.0
    return Level(labels, probability, rescued)


def spreads(representation: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Per cluster, the mean cosine distance of its members to their (normalised) centroid."""
    unit = representation / np.maximum(np.linalg.norm(representation, axis=1, keepdims=True), 1e-12)
    out = {}
    for c in np.unique(labels[labels != NOISE]):
        members = unit[labels == c]
        centroid = members.mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        out[int(c)] = float(np.mean(1 - members @ centroid))
    return out


def _why_split(size: int, spread: float, median: float, total: int, settings: ClusterSettings) -> str | None:
    if size < max(2 * settings.min_cluster_size, MIN_PRODUCTS):
        return None
    if size > settings.max_share * total:
        return f"too large: {size / total:.0%} of the category > {settings.max_share:.0%}"
    if median > 0 and spread > settings.max_spread * median:
        return f"too mixed: spread {spread / median:.2f}x the median cluster > {settings.max_spread:g}x"
    return None


def _split(representation: np.ndarray, labels: np.ndarray, probability: np.ndarray, total: int,
           settings: ClusterSettings, reduction: UMAPSettings, depth: int) -> dict[int, dict]:
    """Re-cluster the clusters of ``labels`` that :func:`_why_split` names, in place: members of
    a split cluster get new ids (above every id in use) or -1. Returns the splits made."""
    splits: dict[int, dict] = {}
    spread = spreads(representation, labels)
    median = float(np.median(list(spread.values()))) if spread else 0.0
    for cluster, value in spread.items():
        members = np.flatnonzero(labels == cluster)
        reason = _why_split(len(members), value, median, total, settings)
        if reason is None:
            continue
        sub_rep = representation[members]
        sub = hdbscan_level(reduce(sub_rep, reduction), settings)
        found = np.unique(sub.labels[sub.labels != NOISE])
        if len(found) < 2:
            splits[cluster] = {"reason": reason, "into": 1, "kept": "no sub-structure found"}
            continue
        if depth + 1 < settings.max_depth:
            _split(sub_rep, sub.labels, sub.probability, total, settings, reduction, depth + 1)
            found = np.unique(sub.labels[sub.labels != NOISE])
        base = int(labels.max()) + 1
        new = np.where(sub.labels == NOISE, NOISE, base + np.searchsorted(found, sub.labels))
        labels[members], probability[members] = new, sub.probability
        splits[cluster] = {"reason": reason, "into": int(len(found)),
                           "unassigned": int((sub.labels == NOISE).sum())}
    return splits


def cascade_cluster(representation: np.ndarray, points: np.ndarray, settings: ClusterSettings,
                    reduction: UMAPSettings) -> Clustering:
    """Cluster a category: HDBSCAN on ``points [B, d]`` (the UMAP of ``representation [B, H]``),
    then, with ``settings.cascade``, the re-clustering step (module docstring).

    Raises:
        ValueError: on mismatched row counts or fewer than :data:`MIN_PRODUCTS` products.
    """
    if len(points) != len(representation):
        raise ValueError(f"points [{len(points)}] and representation [{len(representation)}] differ")
    if len(points) < MIN_PRODUCTS:
        raise ValueError(f"clustering needs at least {MIN_PRODUCTS} products, got {len(points)}")
    settings = settings.model_copy(update={"min_cluster_size": effective_min_cluster_size(
        len(points), settings)})
    first = hdbscan_level(points, settings)
    labels, probability = first.labels.copy(), first.probability.copy()
    splits = (_split(representation, labels, probability, len(points), settings, reduction, 0)
              if settings.cascade else {})
    parent_of = {}
    for c in np.unique(labels[labels != NOISE]):
        parents = first.labels[labels == c]
        parent_of[int(c)] = int(np.bincount(parents[parents != NOISE]).argmax())
    order = sorted(parent_of, key=lambda c: (-(labels == c).sum(), c))  # largest first
    rank = {c: i for i, c in enumerate(order)}
    final = np.asarray([rank.get(int(c), NOISE) for c in labels], np.int64)
    return Clustering(final, first.labels, {rank[c]: parent_of[c] for c in order}, probability,
                      int(first.rescued.sum()), splits, settings.min_cluster_size)
