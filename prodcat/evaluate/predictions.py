"""Every fold's predictions per model and seed, as Parquet, so any figure can be recomputed.

``<output>/predictions/<fold>-seed<k>.parquet``, one row per (test product, model); the folder
reads as one table (``pyarrow.dataset.dataset(<output>/predictions)``). Columns:

- ``product_id``, ``platform``, ``group_id`` (the bootstrap's resampling unit);
- ``fold`` (``in_platform``, ``lopo_<platform>``, ...), ``model`` (the default is ``default``),
  ``seed``;
- ``category_id``: the predicted node's category id (the deepest node output);
- ``level_category_ids``: the category id output at each level (list, -1 where nothing is output;
  a virtual "X itself" class is given as X's id), so the strict hF of invalid paths is recomputable;
- ``level_confidence``: the per-level confidence in [0, 1] (list, 0 where nothing is output);
- ``true_category_id``: the product's label.

To recompute hF: map ids to the fold's taxonomy (``taxonomy.json`` beside the product table,
induced on the fold's training categories) and call :func:`prodcat.core.metrics.hierarchical_prf`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from prodcat.core import storage
from prodcat.core.taxonomy import Taxonomy

FOLDER = "predictions"


def node_classes(taxonomy: Taxonomy, nodes: np.ndarray) -> np.ndarray:
    """Per-level classes ``[B, L]`` (-1 padded) of nodes ``[B]`` (node 0: nothing output)."""
    cache: dict[int, np.ndarray] = {}
    out = np.full((len(nodes), taxonomy.num_levels), -1, np.int64)
    for i, node in enumerate(np.asarray(nodes, np.int64)):
        if node > 0:
            if node not in cache:
                cache[node] = taxonomy.targets(int(node))
            out[i] = cache[node]
    return out


def prediction_table(fold: str, model: str, seed: int, test, taxonomy: Taxonomy,
                     classes: np.ndarray, level_confidence: np.ndarray) -> pa.Table:
    """The rows of one (fold, model, seed): ``test`` is the fold's test
    :class:`~prodcat.train.features.FeatureTable`, ``classes`` ``[B, L]`` the output classes (-1
    padded), ``level_confidence`` ``[B, L]``."""
    classes = np.asarray(classes, np.int64)
    ids = np.full(classes.shape, -1, np.int64)
    for level, nodes in enumerate(taxonomy.level_nodes):
        on = classes[:, level] >= 0
        ids[on, level] = taxonomy.ids[nodes[classes[on, level]]]
    deepest = np.where(classes >= 0, np.arange(classes.shape[1]), -1).max(axis=1)
    category = np.where(deepest >= 0, ids[np.arange(len(ids)), deepest.clip(0)], -1)
    n = len(classes)
    return pa.table({
        "product_id": pa.array(test.column("product_id"), pa.string()),
        "platform": pa.array(test.column("platform"), pa.string()),
        "group_id": pa.array(test.column("group_id").astype(str), pa.string()),
        "fold": pa.array([fold] * n, pa.string()), "model": pa.array([model] * n, pa.string()),
        "seed": pa.array(np.full(n, seed, np.int64)),
        "category_id": pa.array(category), "level_category_ids": pa.array(list(ids), pa.list_(pa.int64())),
        "level_confidence": pa.array(list(np.asarray(level_confidence, np.float32)), pa.list_(pa.float32())),
        "true_category_id": pa.array(np.asarray(test.column("category_id"), np.int64))})


def write_predictions(output: str, fold: str, seed: int, tables: list[pa.Table]) -> str:
    """Write one fold's and seed's rows (every model) to ``<output>/predictions``; returns the URI."""
    uri = storage.join(output, FOLDER, f"{fold}-seed{seed}.parquet")
    storage.write_table(pa.concat_tables(tables), uri)
    return uri
