"""How good a predictions folder is: hP/hR/hF of the paths predicted, against a product table's
labels (the one hF, :func:`prodcat.core.metrics.hierarchical_prf`), overall and per stage.

Letters: B predictions, L taxonomy levels.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodcat.cascade.spec import load_taxonomy_of, resolve_cascade
from prodcat.core import storage
from prodcat.core.metrics import hierarchical_counts, hierarchical_prf
from prodcat.core.taxonomy import Taxonomy
from prodcat.core.uncertainty import hf_interval
from prodcat.score.config import ScoreConfig
from prodcat.score.parts import read_predictions


def output_classes(taxonomy: Taxonomy, level_ids: list) -> np.ndarray:
    """Per-level classes ``[B, L]`` (-1 padded) of the paths predictions output (``level_ids``: per
    row the category id output at each level, or None for a row with an error; an id outside the
    taxonomy counts as no output)."""
    classes = np.full((len(level_ids), taxonomy.num_levels), -1, np.int64)
    for i, ids in enumerate(level_ids):
        for cid in ids or ():
            if cid in taxonomy:
                node = taxonomy.node(int(cid))
                classes[i, len(taxonomy.path_nodes(node)) - 1] = taxonomy.class_index[node]
    return classes


def evaluate_prediction_table(predictions: pa.Table, products: pa.Table, taxonomy: Taxonomy,
                              split: str | None = "test") -> dict:
    """hP/hR/hF (the one hF, :func:`prodcat.core.metrics.hierarchical_prf`, on the path each
    prediction output) against a product table's labels, on ``split`` (None: all labelled rows),
    overall and per answering stage; with the share of valid output paths."""
    labels = products.select([c for c in ("product_id", "category_id", "split", "group_id")
                              if c in products.column_names])
    if split:
        labels = labels.filter(pc.equal(labels["split"], split))
    labels = labels.filter(pc.is_valid(labels["category_id"]))
    index = pc.index_in(labels["product_id"], value_set=predictions["product_id"])
    labels, index = labels.filter(pc.is_valid(index)), index.filter(pc.is_valid(index))
    pred = predictions.take(index)
    true_nodes = np.asarray([taxonomy.label_node(int(c)) if c in taxonomy else 0
                             for c in labels["category_id"].to_pylist()], np.int64)
    classes = output_classes(taxonomy, pred["level_ids"].to_pylist())
    stages = np.asarray([s or "error" for s in pred["stage"].to_pylist()], object)
    valid = pred["valid_path"].to_numpy(zero_copy_only=False)
    out = {"split": split, "products": int(len(true_nodes)),
           **hierarchical_prf(taxonomy, true_nodes, classes),
           "valid_paths": float(np.mean(valid == True)) if len(valid) else 0.0}  # noqa: E712 (nulls)
    groups = (labels["group_id"].to_numpy(zero_copy_only=False) if "group_id" in labels.column_names
              else labels["product_id"].to_numpy(zero_copy_only=False))
    if len(true_nodes):
        ci = hf_interval(hierarchical_counts(taxonomy, true_nodes, classes), groups)
        out["hF_ci"] = [ci.low, ci.high]
    for stage in sorted(set(stages)):
        sel = stages == stage
        out[f"{stage}_products"] = int(sel.sum())
        out[f"{stage}_hF"] = hierarchical_prf(taxonomy, true_nodes[sel], classes[sel])["hF"]
    return out


def evaluate_output(config: ScoreConfig, products: str, split: str | None = "test") -> dict:
    """:func:`evaluate_prediction_table` on the predictions ``config.output`` holds, against the
    labels of the product table ``products`` (local or ``s3://``), with the taxonomy of the
    cascade ``config`` names; also written to ``<output>/_evaluation.json``.

    Raises:
        FileNotFoundError: no product table at ``products``.
    """
    spec = resolve_cascade(config.model, config.text_model, config.multimodal_model)
    taxonomy = load_taxonomy_of(spec.text_model)
    table = storage.read_table(products)                  # group_id optional (older tables)
    table = table.select([c for c in ("product_id", "category_id", "split", "group_id")
                          if c in table.column_names])
    result = evaluate_prediction_table(read_predictions(config.output), table, taxonomy, split)
    storage.write_text(storage.join(config.output, "_evaluation.json"), json.dumps(result, indent=2))
    return result
