"""Clustering against labels nobody here wrote: purity, NMI, ARI, Hungarian-matched accuracy.

The reference labels are each platform's own finer category (Myntra's ``articleType``, H&M's
``product_type_name``: the ``source_category`` of the product table), scored **per platform**:
a cluster holding Myntra's "Casual Shoes" and H&M's "Sneakers" is right for both. Noise points
(cluster -1) are left out of purity, NMI, ARI and accuracy and counted in the noise share, which
is always reported beside them; purity rises with the number of clusters, so the cluster count is
always reported beside it too.

Sources: purity as in Manning et al., *Introduction to Information Retrieval* (2008), 16.3; NMI
(arithmetic normalisation) and ARI from scikit-learn; clustering accuracy with the Hungarian
matching of clusters to labels (``scipy.optimize.linear_sum_assignment``), as in Xie et al. (DEC,
2016). Letters: B products, K clusters, C labels.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from prodcat.recategorize.config import NOISE

METRICS = ("purity", "nmi", "ari", "accuracy")


def _pair(clusters, labels) -> tuple[np.ndarray, np.ndarray]:
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    if clusters.ndim != 1 or clusters.shape != labels.shape:
        raise ValueError(f"clusters and labels must be 1-D of equal length, got {clusters.shape} "
                         f"and {labels.shape}")
    return clusters, labels


def purity(clusters, labels) -> float:
    """Share in [0, 1] of products whose cluster's majority label is their own (0.0 when empty)."""
    clusters, labels = _pair(clusters, labels)
    if not len(clusters):
        return 0.0
    table = contingency_matrix(labels, clusters)  # [C, K]
    return float(table.max(axis=0).sum() / len(clusters))


def matched_accuracy(clusters, labels) -> float:
    """Clustering accuracy in [0, 1]: the best one-to-one matching of clusters to labels
    (Hungarian algorithm); products in unmatched clusters count as wrong (0.0 when empty)."""
    clusters, labels = _pair(clusters, labels)
    if not len(clusters):
        return 0.0
    table = contingency_matrix(labels, clusters)  # [C, K]
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(clusters))


def cluster_scores(clusters, labels) -> dict:
    """Purity, NMI, ARI and accuracy of the non-noise products, with the counts beside them.

    Args:
        clusters: ``[B]`` int cluster per product, -1 = noise (unassigned).
        labels: ``[B]`` reference label per product (any hashable values).

    Returns:
        ``{"products", "assigned", "noise_share", "clusters", "labels", "purity", "nmi", "ari",
        "accuracy"}``; ``labels`` counts the distinct labels of all products, ``clusters`` the
        distinct clusters of the assigned ones. Scores are NaN when no product is assigned.

    Raises:
        ValueError: on mismatched shapes.
    """
    clusters, labels = _pair(clusters, labels)
    kept = clusters != NOISE
    c, y = clusters[kept], labels[kept]
    out = {"products": int(len(clusters)), "assigned": int(kept.sum()),
           "noise_share": float(1 - kept.mean()) if len(clusters) else 0.0,
           "clusters": int(len(np.unique(c))), "labels": int(len(np.unique(labels)))}
    if not kept.any():
        return out | {m: float("nan") for m in METRICS}
    return out | {"purity": purity(c, y), "nmi": float(normalized_mutual_info_score(y, c)),
                  "ari": float(adjusted_rand_score(y, c)), "accuracy": matched_accuracy(c, y)}


def per_platform_scores(clusters, labels, platforms) -> dict:
    """:func:`cluster_scores` for each platform against its own labels, plus ``"all"``.

    ``"all"`` holds the product-weighted means of the platforms' purity, NMI, ARI and accuracy
    (weighted by assigned products), the noise share over every product, the number of distinct
    clusters, and ``labels`` = the largest per-platform label count (the finest reference any
    platform gives) with ``labels_total`` (the sum over platforms) beside it.

    Raises:
        ValueError: on mismatched shapes.
    """
    clusters, labels = _pair(clusters, labels)
    platforms = np.asarray(platforms)
    if platforms.shape != clusters.shape:
        raise ValueError(f"platforms must be [B={len(clusters)}], got {platforms.shape}")
    out = {str(p): cluster_scores(clusters[platforms == p], labels[platforms == p])
           for p in np.unique(platforms)}
    scored = [s for s in out.values() if s["assigned"]]
    weights = np.asarray([s["assigned"] for s in scored], np.float64)
    pooled = {"products": int(len(clusters)), "assigned": int((clusters != NOISE).sum()),
              "noise_share": float((clusters == NOISE).mean()) if len(clusters) else 0.0,
              "clusters": int(len(np.unique(clusters[clusters != NOISE]))),
              "labels": max((s["labels"] for s in out.values()), default=0),
              "labels_total": int(sum(s["labels"] for s in out.values()))}
    for metric in METRICS:
        pooled[metric] = (float(np.average([s[metric] for s in scored], weights=weights))
                          if scored else float("nan"))
    out["all"] = pooled
    return out
