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
``text``, ``image``, ``text+image``), each a full :func:`prodcat.training.train` run; plus the flat
TF-IDF + linear SVM baseline (:mod:`prodcat.baselines`) on title + description. Every model is
scored on the same rows with :func:`prodcat.training.score`.

Outputs in ``output``: ``results.json``, ``report.md`` and PNG plots (:mod:`prodcat.report`),
and one training run folder per (fold, model) under ``runs/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from prodcat import storage
from prodcat.baselines import TfidfBaseline, TfidfConfig, node_classes, product_texts
from prodcat.config import StrictModel
from prodcat.features import FeatureTable, load_feature_table
from prodcat.training import TrainConfig, apply_overrides, score, train


class GridSettings(StrictModel):
    """The model grid; every combination is trained and scored."""

    fusions: list[str] = Field(["late"], min_length=1, description="model.fusion values")
    maskings: list[str] = Field(["hard"], min_length=1, description="model.masking values")
    modalities: dict[str, list[str]] = Field(
        default_factory=lambda: {"text": ["text"], "image": ["image"], "text+image": ["text", "image"]},
        description="named modality sets → model.modalities")


class EvaluateConfig(StrictModel):
    """``prodcat evaluate`` settings; ``train`` is the base config every grid cell overrides."""

    train: TrainConfig = Field(default_factory=TrainConfig, description="base training config")
    grid: GridSettings = Field(default_factory=GridSettings)
    protocols: list[Literal["in_platform", "lopo"]] = Field(["in_platform", "lopo"], min_length=1)
    lopo_platforms: list[str] | None = Field(None, description="held-out platforms; None: every fold")
    baselines: list[Literal["tfidf"]] = Field(["tfidf"], description="baselines on the same splits")
    tfidf: TfidfConfig = Field(default_factory=TfidfConfig)
    test_split: str = Field("test", description="in-platform test split")
    output: str = Field("runs/evaluate", description="output folder, local or s3://")
    plots: bool = Field(True, description="write PNG plots")

    @model_validator(mode="after")
    def _grid_names(self) -> "EvaluateConfig":
        if not self.grid.modalities:
            raise ValueError("grid.modalities is empty; e.g. {text: [text]}")
        return self


@dataclass
class Fold:
    """One train/test arrangement."""

    name: str
    protocol: str
    train_platforms: list[str]
    test_platforms: list[str]
    test_splits: list[str] | None  # None: every split of the test platforms


def make_folds(config: EvaluateConfig, protocol: dict, platforms: list[str]) -> list[Fold]:
    """The folds to run, from the product table's protocol (LOPO folds) and ``config``.

    Raises:
        ValueError: when LOPO is asked for with fewer than two platforms.
    """
    folds = []
    if "in_platform" in config.protocols:
        folds.append(Fold("in_platform", "in_platform", platforms, platforms, [config.test_split]))
    if "lopo" in config.protocols:
        lopo = protocol.get("leave_one_platform_out") or [
            {"test": p, "train": [q for q in platforms if q != p]} for p in platforms]
        if len(platforms) < 2:
            raise ValueError(f"leave-one-platform-out needs two or more platforms, got {platforms}")
        for f in lopo:
            if f["test"] in platforms and (config.lopo_platforms is None or f["test"] in config.lopo_platforms):
                train_on = [p for p in f["train"] if p in platforms]
                folds.append(Fold(f"lopo_{f['test']}", "lopo", train_on, [f["test"]], None))
    return folds


def grid_cells(grid: GridSettings) -> list[dict]:
    """``[{"name", "fusion", "masking", "modality", "modalities"}]`` for every combination."""
    return [{"name": f"{fusion}/{masking}/{mod}", "fusion": fusion, "masking": masking,
             "modality": mod, "modalities": feats}
            for fusion in grid.fusions for masking in grid.maskings
            for mod, feats in grid.modalities.items()]


def _texts(products_uri: str, product_ids: np.ndarray) -> list[str]:
    """Title + description for ``product_ids`` (in that order) from the product table."""
    import pyarrow.compute as pc

    table = storage.read_table(products_uri, columns=["product_id", "title", "description"])
    index = pc.index_in(pa_array(product_ids), value_set=table["product_id"])
    return product_texts(table.take(index))


def pa_array(values):
    import pyarrow as pa

    return pa.array(list(values), pa.string())


def split_fold(table: FeatureTable, fold: Fold, config: EvaluateConfig) -> tuple[FeatureTable, dict]:
    """Test rows of ``fold`` restricted to covered categories, and the coverage figures."""
    data = config.train.data
    train_rows = table.rows(splits=[data.train_split], platforms=fold.train_platforms)
    test_rows = table.rows(splits=fold.test_splits, platforms=fold.test_platforms)
    covered_nodes = np.unique(train_rows.column("node"))
    covered = np.isin(test_rows.column("node"), covered_nodes)
    test_nodes = np.unique(test_rows.column("node"))
    info = {"fold": fold.name, "protocol": fold.protocol, "train_platforms": fold.train_platforms,
            "test_platforms": fold.test_platforms, "test_splits": fold.test_splits,
            "n_train": len(train_rows), "n_test_all": len(test_rows), "n_test": int(covered.sum()),
            "n_train_used": min(len(train_rows), data.max_train_products or len(train_rows)),
            "coverage": float(covered.mean()) if len(covered) else 0.0,
            "test_categories": int(len(test_nodes)),
            "covered_categories": int(np.isin(test_nodes, covered_nodes).sum())}
    return test_rows.where(covered), info


def _score_rows(taxonomy, test: FeatureTable, nodes: np.ndarray, classes: np.ndarray) -> dict:
    """Overall metrics plus ``per_platform`` hF."""
    true = test.column("node")
    out = score(taxonomy, true, nodes, classes) if len(true) else {"n": 0}
    platforms = test.column("platform")
    out["per_platform_hF"] = {str(p): score(taxonomy, true[platforms == p], nodes[platforms == p])["hF"]
                              for p in np.unique(platforms)}
    return out


def run_cell(table: FeatureTable, fold: Fold, cell: dict, test: FeatureTable,
             config: EvaluateConfig, progress=print) -> tuple[dict, np.ndarray]:
    """Train one grid cell on ``fold`` and score it on ``test``; ``(row, predicted nodes)``."""
    from prodcat.checkpoint import load_checkpoint

    safe = cell["name"].replace("/", "_").replace("+", "_")
    cfg = apply_overrides(config.train, {
        "model.fusion": cell["fusion"], "model.masking": cell["masking"],
        "model.modalities": cell["modalities"], "data.platforms": fold.train_platforms,
        "output": storage.join(config.output, "runs", fold.name, safe), "name": safe})
    start = time.perf_counter()
    result = train(cfg, table=table, progress=progress)
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
    from prodcat.training import _train_rows

    cfg = apply_overrides(config.train, {"data.platforms": fold.train_platforms})
    train_rows = _train_rows(table.rows(platforms=fold.train_platforms), cfg)
    start = time.perf_counter()
    model = TfidfBaseline(config.tfidf).fit([texts[p] for p in train_rows.column("product_id")],
                                            train_rows.column("node"))
    nodes = model.predict([texts[p] for p in test.column("product_id")])
    row = {"fold": fold.name, "protocol": fold.protocol, "model": "tfidf-linear", "kind": "baseline",
           "fusion": "-", "masking": "-", "modality": "text (tf-idf)",
           **_score_rows(table.taxonomy, test, nodes, node_classes(table.taxonomy, nodes)),
           "train_seconds": time.perf_counter() - start}
    return row, nodes


def evaluate(config: EvaluateConfig, table: FeatureTable | None = None, progress=print) -> dict:
    """Run every fold x (grid cell + baselines); write results.json, report.md and plots.

    Returns:
        the results dict (as written to ``results.json``).

    Raises:
        FileNotFoundError: when the product table or the store is missing.
    """
    from prodcat.catalog.build import read_protocol
    from prodcat.report import write_report
    from prodcat.runtime import ensure_ray

    ensure_ray()
    start = time.perf_counter()
    data = config.train.data
    cells = grid_cells(config.grid)
    features = sorted({f for c in cells for f in c["modalities"]})
    if table is None:
        table = load_feature_table(data.products, data.embeddings, features, data.taxonomy)
    if data.platforms:
        table = table.rows(platforms=data.platforms)
    platforms = sorted(np.unique(table.column("platform")).tolist())
    folds = make_folds(config, read_protocol(data.products), platforms)
    texts = dict(zip(table.column("product_id"), _texts(data.products, table.column("product_id")))) \
        if "tfidf" in config.baselines else {}
    rows, fold_info, predictions = [], [], {}
    for fold in folds:
        test, info = split_fold(table, fold, config)
        fold_info.append(info)
        progress(f"[evaluate] {fold.name}: train {info['n_train']:,} on {fold.train_platforms}, test "
                 f"{info['n_test']:,} of {info['n_test_all']:,} (coverage {info['coverage']:.1%})")
        if not len(test):
            continue
        predictions[fold.name] = {"true": test.column("node"), "models": {}}
        for cell in cells:
            row, nodes = run_cell(table, fold, cell, test, config, progress)
            rows.append(row)
            predictions[fold.name]["models"][cell["name"]] = nodes
            progress(f"[evaluate] {fold.name} {cell['name']}: hF={row['hF']:.4f}")
            storage.write_text(storage.join(config.output, "results.partial.json"),  # crash insurance
                               json.dumps({"folds": fold_info, "results": rows}, default=float))
        if "tfidf" in config.baselines:
            row, nodes = run_tfidf(table, fold, test, texts, config)
            rows.append(row)
            predictions[fold.name]["models"]["tfidf-linear"] = nodes
            progress(f"[evaluate] {fold.name} tfidf-linear: hF={row['hF']:.4f}")
    results = {"config": config.model_dump(mode="json"), "folds": fold_info, "results": rows,
               "dataset": {"products": data.products, "embeddings": data.embeddings,
                           "features": features, "rows": len(table), "platforms": platforms,
                           "taxonomy_version": table.taxonomy.version},
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
    from prodcat.report import plot_hf, results_markdown

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
