"""UMAP (umap-learn, McInnes et al. 2018) to a few dimensions before density clustering.

Density-based clustering degrades in hundreds of dimensions; topic-modelling practice (BERTopic)
reduces sentence embeddings with UMAP to 5 components, 15 neighbours, ``min_dist`` 0 (points of a
cluster packed tightly) and the cosine metric, then runs HDBSCAN. Letters: B products, D input
dimension, d output dimension.
"""

from __future__ import annotations

import warnings

import numpy as np

from prodcat.recategorize.config import UMAPSettings

#: the fewest products UMAP and HDBSCAN are run on
MIN_PRODUCTS = 10


def reduce(x: np.ndarray, settings: UMAPSettings, n_components: int | None = None,
           min_dist: float | None = None) -> np.ndarray:
    """``x [B, D]`` → ``[B, d]`` float32 with ``umap.UMAP`` (``d = n_components`` or the
    settings'); ``n_neighbors`` is capped at ``B - 1`` for small inputs.

    Raises:
        ValueError: with fewer than :data:`MIN_PRODUCTS` rows.
    """
    import umap  # lazy: umap-learn imports numba (seconds); only the category tasks need it

    x = np.asarray(x, np.float32)
    if len(x) < MIN_PRODUCTS:
        raise ValueError(f"UMAP needs at least {MIN_PRODUCTS} products, got {len(x)}")
    d = n_components or settings.n_components
    model = umap.UMAP(n_neighbors=min(settings.n_neighbors, len(x) - 1), n_components=d,
                      min_dist=settings.min_dist if min_dist is None else min_dist,
                      metric=settings.metric, random_state=settings.seed, n_jobs=1,
                      init="spectral" if len(x) > d + 1 else "random")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # "n_jobs overridden", tiny graphs
        return np.asarray(model.fit_transform(x), np.float32)
