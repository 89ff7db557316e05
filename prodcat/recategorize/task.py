"""One category, start to end: SimCLR → UMAP → cascade clustering, the ablations, the scores,
the suggested names and the 2-D layout. Pure computation (numpy in, a :class:`CategoryResult`
out), run as one Ray task per category by :mod:`prodcat.recategorize.propose`.

Variants (the ablations are the same steps with one switched off; both UMAP + HDBSCAN runs give
their level-1 result for free, so the four variants cost two clusterings):

- ``simclr+cascade``: the method (the representation h of the SimCLR network, re-clustering);
- ``simclr``: without the cascade step (level 1 only);
- ``raw+cascade``: without SimCLR (the L2-normalised stored embeddings, concatenated);
- ``raw``: neither.

Letters: B products, H representation dimension, K clusters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from prodcat.recategorize.clustering import NOISE, Clustering, cascade_cluster
from prodcat.recategorize.config import RecategorizeConfig
from prodcat.recategorize.data import CategoryData
from prodcat.recategorize.naming import suggest_name, top_terms
from prodcat.recategorize.reduce import reduce
from prodcat.recategorize.scores import per_platform_scores
from prodcat.recategorize.simclr import make_inputs, train_simclr


@dataclass
class ClusterInfo:
    """One proposed subcategory: its ``cluster`` id, ``size``, products per platform, the
    c-TF-IDF ``terms`` and suggested ``name``, the level-1 cluster it came from, the
    ``examples`` (row indices, closest to the centroid, platforms in turn) and the platforms'
    finer labels inside it (``label_mix``: ``platform:label`` → products, largest first)."""

    cluster: int
    size: int
    platforms: dict[str, int]
    terms: list[str]
    name: str
    parent: int
    examples: list[int]
    label_mix: dict[str, int]


@dataclass
class CategoryResult:
    """What one category task returns.

    Attributes:
        labels: ``[B]`` final clusters of the chosen variant (``variant``), -1 unassigned.
        first_level: ``[B]`` its level-1 clusters; ``probability``: ``[B]`` membership in [0, 1].
        coords: ``[B, 2]`` a 2-D UMAP of the representation, for the scatter plot.
        scores: variant → :func:`per_platform_scores` (platform and ``"all"`` → metrics).
        clusters: one :class:`ClusterInfo` per final cluster, largest first.
        splits: level-1 cluster → why and into how many it was re-clustered.
        rescued: noise points that joined a cluster by soft membership.
        min_cluster_size: the HDBSCAN ``min_cluster_size`` used for this category.
        simclr: ``{"epochs", "first_loss", "last_loss", "pair_accuracy", "seconds"}`` or None.
        seconds: wall time per step (s).
    """

    category_id: int
    variant: str
    labels: np.ndarray
    first_level: np.ndarray
    probability: np.ndarray
    coords: np.ndarray
    scores: dict[str, dict]
    clusters: list[ClusterInfo]
    splits: dict[int, dict]
    rescued: int
    simclr: dict | None
    seconds: dict[str, float] = field(default_factory=dict)
    min_cluster_size: int = 0


def _examples(representation: np.ndarray, labels: np.ndarray, platforms: np.ndarray, cluster: int,
              n: int) -> list[int]:
    """Up to ``n`` members closest (cosine) to the cluster centroid, taking platforms in turn."""
    members = np.flatnonzero(labels == cluster)
    unit = representation[members] / np.maximum(
        np.linalg.norm(representation[members], axis=1, keepdims=True), 1e-12)
    centroid = unit.mean(axis=0)
    order = members[np.argsort(-(unit @ centroid), kind="stable")]
    queues: dict[str, list[int]] = {}
    for i in order:
        queues.setdefault(str(platforms[i]), []).append(int(i))
    picked: list[int] = []
    while len(picked) < min(n, len(members)):
        for queue in sorted(queues.values(), key=len, reverse=True):
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def _label(platform: str, finer: str) -> str:
    return f"{platform}:{str(finer).split(' > ')[-1]}"


def describe_clusters(data: CategoryData, clustering: Clustering, representation: np.ndarray,
                      config: RecategorizeConfig) -> list[ClusterInfo]:
    """A :class:`ClusterInfo` per final cluster (names from c-TF-IDF over brand-less titles)."""
    labels = clustering.labels
    terms = top_terms(data.title, labels, data.brand, config.name_terms)
    out = []
    for c in sorted(int(k) for k in np.unique(labels[labels != NOISE])):
        members = labels == c
        platforms, counts = np.unique(data.platform[members].astype(str), return_counts=True)
        mix: dict[str, int] = {}
        for p, f in zip(data.platform[members], data.finer_label[members]):
            mix[_label(p, f)] = mix.get(_label(p, f), 0) + 1
        out.append(ClusterInfo(
            cluster=c, size=int(members.sum()),
            platforms={str(p): int(n) for p, n in sorted(zip(platforms, counts), key=lambda t: -t[1])},
            terms=terms.get(c, []), name=suggest_name(terms.get(c, []), f"Cluster {c}"),
            parent=int(clustering.parent[c]),
            examples=_examples(representation, labels, data.platform, c, config.examples),
            label_mix=dict(sorted(mix.items(), key=lambda t: -t[1]))))
    return out


def recategorize_category(data: CategoryData, config: RecategorizeConfig) -> CategoryResult:
    """Run the method and its ablations on one category (module docstring).

    Raises:
        ValueError: with fewer than 10 products (UMAP and HDBSCAN need some).
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    inputs = make_inputs(data.features, data.present,
                         data.platform if config.center_platforms else None)
    reference = np.asarray([str(x) for x in data.finer_label], object)
    representations = {"raw": inputs.x}
    simclr = None
    if config.simclr.enabled or config.ablations:
        trained = train_simclr(inputs, config.simclr)
        representations["simclr"] = trained.representation
        simclr = {"epochs": len(trained.losses), "first_loss": trained.losses[0],
                  "last_loss": trained.losses[-1], "pair_accuracy": trained.pair_accuracy,
                  "seconds": round(trained.seconds, 2)}
        seconds["simclr"] = round(trained.seconds, 2)
    chosen = "simclr" if config.simclr.enabled else "raw"
    runs = [chosen] + ([r for r in representations if r != chosen] if config.ablations else [])
    clusterings: dict[str, Clustering] = {}
    scores: dict[str, dict] = {}
    for name in runs:
        t = time.perf_counter()
        rep = representations[name]
        clustering = cascade_cluster(rep, reduce(rep, config.umap), config.clustering, config.umap)
        clusterings[name] = clustering
        seconds[f"umap+hdbscan ({name})"] = round(time.perf_counter() - t, 2)
        scores[f"{name}+cascade" if config.clustering.cascade else name] = per_platform_scores(
            clustering.labels, reference, data.platform)
        if config.ablations and config.clustering.cascade:
            scores[name] = per_platform_scores(clustering.first_level, reference, data.platform)
    main = clusterings[chosen]
    rep = representations[chosen]
    t = time.perf_counter()
    coords = reduce(rep, config.umap, n_components=2, min_dist=0.1)
    clusters = describe_clusters(data, main, rep, config)
    seconds["layout+names"] = round(time.perf_counter() - t, 2)
    seconds["total"] = round(time.perf_counter() - t0, 2)
    variant = f"{chosen}+cascade" if config.clustering.cascade else chosen
    return CategoryResult(data.category_id, variant, main.labels, main.first_level, main.probability,
                          coords, scores, clusters, main.splits, main.rescued, simclr, seconds,
                          main.min_cluster_size)
