"""``prodcat evaluate``: a grid of models and baselines on the same splits, in-platform and
leave-one-platform-out (LOPO).

Protocols (folds from the product table's metadata, :func:`prodcat.catalog.build.read_protocol`):

- ``in_platform``: train on the ``train`` split of every platform (early stopping on ``val``),
  test on the ``test`` split; metrics overall and per platform.
- ``lopo``: per held-out platform P, train on the other platforms' ``train`` split (``val`` for
  early stopping), test on every labelled product of P whose category occurs in the training
  rows. ``coverage`` = the share of P's labelled products so covered; the rest cannot be
  predicted by any model trained without P and is reported, not scored.

Grid: ``model.fusion`` x ``model.masking`` x ``model.modalities`` (named modality sets, e.g.
``text``, ``image``, ``text+image``), each a full :func:`prodcat.train.trainer.train` run; plus the flat
TF-IDF + linear SVM baseline (:mod:`prodcat.evaluate.baselines`) on title + description. Every model is
scored on the same rows with :func:`prodcat.core.metrics.hierarchical_metrics`.

Outputs in ``output``: ``results.json``, ``report.md`` and PNG plots (:mod:`prodcat.evaluate.report`),
and one training run folder per (fold, model) under ``runs/``.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from prodcat.catalog.build import read_protocol
from prodcat.core import storage
from prodcat.core.console import Progress, say
from prodcat.core.metrics import hierarchical_metrics
from prodcat.core.runtime import ensure_ray
from prodcat.evaluate.baselines import TfidfBaseline, node_classes, product_texts
from prodcat.evaluate.config import EvaluateConfig
from prodcat.evaluate.folds import Fold, grid_cells, make_folds, split_fold
from prodcat.evaluate.report import plot_hf, results_markdown, write_report
from prodcat.models.checkpoint import load_checkpoint
from prodcat.train.config import apply_overrides
from prodcat.train.features import FeatureTable, describe_counts, load_feature_table
from prodcat.train.trainer import select_train_rows, train


def _texts(products_uri: str, product_ids: np.ndarray) -> list[str]:
    """Title + description for ``product_ids`` (in that order) from the product table."""
    import pyarrow.compute as pc

    table = storage.read_table(products_uri, columns=["product_id", "title", "description"])
    index = pc.index_in(pa_array(product_ids), value_set=table["product_id"])
    return product_texts(table.take(index))


def pa_array(values):
    import pyarrow as pa

    return pa.array(list(values), pa.string())


def _score_rows(taxonomy, test: FeatureTable, nodes: np.ndarray, classes: np.ndarray) -> dict:
    """Overall metrics plus ``per_platform`` hF."""
    true = test.column("node")
    out = hierarchical_metrics(taxonomy, true, nodes, classes) if len(true) else {"n": 0}
    platforms = test.column("platform")
    out["per_platform_hF"] = {str(p): hierarchical_metrics(taxonomy, true[platforms == p], nodes[platforms == p])["hF"]
                              for p in np.unique(platforms)}
    return out


def run_cell(table: FeatureTable, fold: Fold, cell: dict, test: FeatureTable,
             config: EvaluateConfig) -> tuple[dict, np.ndarray]:
    """Train one grid cell on ``fold`` and score it on ``test``; ``(row, predicted nodes)``."""

    safe = cell["name"].replace("/", "_").replace("+", "_")
    cfg = apply_overrides(config.train, {
        "model.fusion": cell["fusion"], "model.masking": cell["masking"],
        "model.modalities": cell["modalities"], "data.platforms": fold.train_platforms,
        "output": storage.join(config.output, "runs", fold.name, safe), "name": safe})
    start = time.perf_counter()
    result = train(cfg, table=table, progress=None)
    loaded = load_checkpoint(result.checkpoint)
    feats, present, _ = test.with_features(cell["modalities"]).arrays()
    pred = loaded.predict(feats, present)
    row = {"fold": fold.name, "protocol": fold.protocol, "model": cell["name"], "kind": "grid",
           **{k: cell[k] for k in ("fusion", "masking", "modality")},
           **_score_rows(table.taxonomy, test, pred["node"], pred["classes"]),
           "epochs": len(result.history), "best_epoch": int(result.metrics["epoch"]),
           "val_hF": result.metrics["val_hF"], "seconds_per_epoch": result.seconds_per_epoch,
           "peak_memory_mb": result.peak_memory_mb, "train_seconds": time.perf_counter() - start,
           "checkpoint": result.checkpoint, "temperature": result.temperature}
    return row, pred["node"]


def run_tfidf(table: FeatureTable, fold: Fold, test: FeatureTable, texts: dict[str, str],
              config: EvaluateConfig) -> tuple[dict, np.ndarray]:
    """Fit the TF-IDF baseline on the fold's training rows (the same subsample as the grid when
    ``train.data.max_train_products`` is set) and score it on ``test``."""

    cfg = apply_overrides(config.train, {"data.platforms": fold.train_platforms})
    train_rows = select_train_rows(table.rows(platforms=fold.train_platforms), cfg)
    start = time.perf_counter()
    model = TfidfBaseline(config.tfidf).fit([texts[p] for p in train_rows.column("product_id")],
                                            train_rows.column("node"))
    nodes = model.predict([texts[p] for p in test.column("product_id")])
    row = {"fold": fold.name, "protocol": fold.protocol, "model": "tfidf-linear", "kind": "baseline",
           "fusion": "-", "masking": "-", "modality": "text (tf-idf)",
           **_score_rows(table.taxonomy, test, nodes, node_classes(table.taxonomy, nodes)),
           "train_seconds": time.perf_counter() - start}
    return row, nodes


def evaluate(config: EvaluateConfig, table: FeatureTable | None = None,
             progress: Callable[[str], None] = say) -> dict:
    """Run every fold x (grid cell + baselines); write results.json, report.md and plots.

    Returns:
        the results dict (as written to ``results.json``).

    Raises:
        FileNotFoundError: when the product table or the store is missing.
    """

    ensure_ray()
    start = time.perf_counter()
    data = config.train.data
    cells = grid_cells(config.grid)
    features = sorted({f for c in cells for f in c["modalities"]})
    if table is None:
        table = load_feature_table(data.products, data.embeddings, features, data.taxonomy,
                                   data.skip_unreadable)
    if data.platforms:
        table = table.rows(platforms=data.platforms)
    progress(f"[evaluate] {describe_counts(table.counts, len(table))}")
    platforms = sorted(np.unique(table.column("platform")).tolist())
    folds = make_folds(config, read_protocol(data.products), platforms)
    texts = dict(zip(table.column("product_id"), _texts(data.products, table.column("product_id")))) \
        if "tfidf" in config.baselines else {}
    rows, fold_info, predictions = [], [], {}
    runs = Progress("evaluate", len(folds) * (len(cells) + len(config.baselines)), "runs", log=progress)
    for fold in folds:
        test, info = split_fold(table, fold, config)
        fold_info.append(info)
        progress(f"[evaluate] {fold.name}: train {info['n_train']:,} on {fold.train_platforms}, test "
                 f"{info['n_test']:,} of {info['n_test_all']:,} (coverage {info['coverage']:.1%})")
        if not len(test):
            continue
        predictions[fold.name] = {"true": test.column("node"), "models": {}}
        for cell in cells:
            row, nodes = run_cell(table, fold, cell, test, config)
            rows.append(row)
            predictions[fold.name]["models"][cell["name"]] = nodes
            runs.step(f"{fold.name} {cell['name']}: hF {row['hF']:.4f} ({row['epochs']} epochs, "
                      f"{row['train_seconds']:.0f} s)")
            storage.write_text(storage.join(config.output, "results.partial.json"),  # crash insurance
                               json.dumps({"folds": fold_info, "results": rows}, default=float))
        if "tfidf" in config.baselines:
            row, nodes = run_tfidf(table, fold, test, texts, config)
            rows.append(row)
            predictions[fold.name]["models"]["tfidf-linear"] = nodes
            runs.step(f"{fold.name} tfidf-linear: hF {row['hF']:.4f} ({row['train_seconds']:.0f} s)")
    results = {"config": config.model_dump(mode="json"), "folds": fold_info, "results": rows,
               "dataset": {"products": data.products, "embeddings": data.embeddings,
                           "features": features, "rows": len(table), "platforms": platforms,
                           "taxonomy_version": table.taxonomy.version, "counts": table.counts},
               "seconds": time.perf_counter() - start}
    write_report(results, predictions, table.taxonomy, config.output, plots=config.plots)
    progress(f"[evaluate] {len(rows)} results in {results['seconds']:.0f} s → {config.output}")
    return results


def load_results(output: str) -> dict:
    """``results.json`` of an evaluation output folder."""
    return json.loads(storage.read_text(storage.join(output, "results.json")))


def merge_results(outputs: list[str], output: str) -> dict:
    """Merge the ``results.json`` of several evaluation folders (e.g. in-platform and LOPO run
    separately, or two grids on the same folds) into ``output``: ``results.json``, ``report.md``
    and ``hf_by_model.png`` (per-fold plots stay in the source folders). Rows are unioned; a
    (fold, model) pair present twice keeps the later folder's row.

    Raises:
        FileNotFoundError: when a folder has no ``results.json``.
    """

    parts = [load_results(o) for o in outputs]
    folds = {f["fold"]: f for p in parts for f in p["folds"]}
    rows = list({(r["fold"], r["model"]): r for p in parts for r in p["results"]}.values())
    dataset = dict(parts[-1]["dataset"])
    merged = {"config": [p["config"] for p in parts], "folds": list(folds.values()), "results": rows,
              "dataset": dataset, "seconds": sum(p["seconds"] for p in parts), "merged_from": outputs}
    storage.write_text(storage.join(output, "results.json"), json.dumps(merged, indent=2, default=float))
    md = results_markdown(merged) + "\nMerged from: " + ", ".join(outputs) + "\n"
    if rows:
        plot_hf(merged, storage.join(output, "hf_by_model.png"))
        md += "\n![hf_by_model.png](hf_by_model.png)\n"
    storage.write_text(storage.join(output, "report.md"), md)
    return merged
