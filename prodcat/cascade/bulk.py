"""Bulk scoring: the two-stage cascade as a Ray Data job, with the same
:class:`prodcat.cascade.stage.StageRunner` the Serve replicas use.

Bulk scoring (``prodcat score``)::

    input (Parquet / CSV / JSON Lines, product-table columns or an adapter mapping)
      ─► rows that cannot be scored (unparseable, no id, no title) → written with their error
      ─► TextStage actor pool over every good row ─► confident rows → written
      ─► MultimodalStage actor pool over the escalated rows ─► written

Output: a folder of Parquet parts in ``PREDICTION_SCHEMA`` (``pyarrow.parquet.read_table`` reads
the folder), ``_job.json`` (what is being scored, with which models) and ``_summary.json`` when the
job is complete. Each part appears atomically and names the input rows it holds (Parquet metadata
``prodcat_rows``), so a rerun after an interruption scores only the rows not yet written. Every
input row appears exactly once: predicted, or with its error.
"""

from __future__ import annotations

import json
import math
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodcat.cascade.config import ScoreConfig
from prodcat.cascade.inputs import INPUT_COLUMNS, input_fingerprint, read_input
from prodcat.cascade.parts import PartWriter, done_rows, prediction_table
from prodcat.cascade.policy import route
from prodcat.cascade.spec import CascadeSpec, resolve_cascade
from prodcat.cascade.stage import StageRunner
from prodcat.core import storage
from prodcat.core.console import Progress, say
from prodcat.core.metrics import hierarchical_counts, hierarchical_prf
from prodcat.core.runtime import ensure_ray
from prodcat.core.taxonomy import Taxonomy
from prodcat.core.uncertainty import hf_interval
from prodcat.embed.store import (
    feature_matrix,
    read_manifest,
    read_store,
    skipped_rows,
    vector_column,
)
from prodcat.models.checkpoint import CONFIG, WEIGHTS, read_json, weights_version


# ---------------------------------------------------------------------- bulk scoring: actors
class StageActor:
    """Ray Data callable class: one :class:`StageRunner` per actor, pyarrow batches in and out.

    Adds ``category_id``, ``category_path``, ``level_ids``, ``valid_path``, ``level_confidence``, ``confidence``, ``stage``,
    ``model_version``; with ``threshold`` (stage 1 of a cascade) also ``_escalate`` and the
    reusable feature vectors of the escalated rows (``emb_/status_/fp_<f>``).
    """

    def __init__(self, checkpoint: str, stage: str, temperature: float | None, device: str,
                 confidence_mode: str, num_threads: int, image_limits: dict,
                 threshold: float | None = None) -> None:
        self.runner = StageRunner(checkpoint, stage, temperature, device, confidence_mode,
                                  num_threads, image_limits)
        self.threshold = threshold

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns = {k: batch[k].to_pylist() for k in INPUT_COLUMNS}
        reuse = [c for c in batch.column_names if c.startswith(("emb_", "status_", "fp_"))]
        for c in reuse:
            columns[c] = batch[c].to_pylist()
        keep = ([f for f, info in self.runner.model.encoders.items() if info.get("modality") == "text"]
                if self.threshold is not None else [])
        out = self.runner.predict_batch(columns, keep_features=keep)
        result = batch.drop_columns(reuse)
        result = result.append_column("category_id", pa.array(out["category_id"], pa.int64()))
        result = result.append_column("category_path", pa.array(out["category_path"], pa.string()))
        result = result.append_column("level_ids", pa.array(out["level_ids"], pa.list_(pa.int64())))
        result = result.append_column("valid_path", pa.array(out["valid_path"], pa.bool_()))
        result = result.append_column("level_confidence", pa.array(out["level_confidence"],
                                                                    pa.list_(pa.float32())))
        result = result.append_column("confidence", pa.array(out["confidence"], pa.float64()))
        result = result.append_column("stage", pa.array(out["stage"], pa.string()))
        result = result.append_column("model_version", pa.array(out["model_version"], pa.string()))
        if self.threshold is not None:
            escalate = route(np.asarray(out["confidence"]), self.threshold)
            result = result.append_column("_escalate", pa.array(escalate))
            for f in keep:
                dim = self.runner.model.input_dims[f]
                vectors = np.asarray(out[f"emb_{f}"], np.float32).reshape(-1, dim)
                ok = np.asarray(out[f"status_{f}"], object) == "ok"
                result = result.append_column(f"emb_{f}", vector_column(vectors, ok))
                result = result.append_column(f"status_{f}", pa.array(out[f"status_{f}"], pa.string()))
                result = result.append_column(f"fp_{f}", pa.array(out[f"fp_{f}"], pa.string()))
        return result


def _stage_dataset(tables: list[pa.Table], config: ScoreConfig, spec: CascadeSpec, stage: str,
                   threshold: float | None):
    import ray
    from ray.data import ActorPoolStrategy

    text = stage == "text"
    num_cpus = config.text_num_cpus if text else config.multimodal_num_cpus
    threads = config.torch_threads or max(1, round(num_cpus))
    ds = ray.data.from_arrow(tables)
    return ds.map_batches(
        StageActor, batch_format="pyarrow",
        batch_size=config.text_batch_size if text else config.multimodal_batch_size,
        compute=ActorPoolStrategy(size=config.text_pool_size if text else config.multimodal_pool_size),
        num_cpus=num_cpus, num_gpus=(None if text or not config.multimodal_num_gpus
                                     else config.multimodal_num_gpus),
        fn_constructor_kwargs={
            "checkpoint": spec.text_model if text else spec.multimodal_model, "stage": stage,
            "temperature": spec.text_temperature if text else spec.multimodal_temperature,
            "device": config.device, "confidence_mode": spec.confidence_mode,
            "num_threads": threads, "image_limits": config.image_limits.model_dump(),
            "threshold": threshold})


def _blocks(table: pa.Table, rows: int) -> list[pa.Table]:
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)] or [table]


# ---------------------------------------------------------------------- bulk scoring: the job
def _job_record(config: ScoreConfig, spec: CascadeSpec, table: pa.Table) -> dict:

    versions = {name: weights_version(storage.read_bytes(storage.join(uri, WEIGHTS)))
                for name, uri in (("text", spec.text_model), ("multimodal", spec.multimodal_model))}
    return {"input": config.input, "adapters": config.adapters, "rows": table.num_rows,
            "features_from": config.features_from,
            "input_fingerprint": input_fingerprint(table), "mode": config.mode,
            "threshold": "inf" if math.isinf(spec.threshold) else spec.threshold,
            "model_versions": versions, "text_model": spec.text_model,
            "multimodal_model": spec.multimodal_model}


def _check_job(output: str, job: dict, overwrite: bool) -> None:
    """Start a new job record, or check that ``output`` holds a part of the same job.

    Raises:
        ValueError: when ``output`` holds predictions of another input, model or threshold.
    """
    uri = storage.join(output, "_job.json")
    if storage.exists(uri) and overwrite:
        fs, path = storage.filesystem(output)
        fs.delete_dir_contents(path)
    if storage.exists(uri):
        old = json.loads(storage.read_text(uri))
        keys = ("input_fingerprint", "rows", "mode", "threshold", "model_versions")
        changed = [k for k in keys if old.get(k) != job.get(k)]
        if changed:
            raise ValueError(f"{output} holds predictions of another job ({', '.join(changed)} "
                             "differ); use a new output folder or --overwrite")
        return
    storage.write_text(uri, json.dumps(job, indent=2))


def checkpoint_fingerprints(checkpoint: str) -> dict[str, str]:
    """``{feature: encoder fingerprint key}`` recorded in a checkpoint's ``config.json``, for the
    features an encoder makes (the lexical feature is computed from the text, never stored)."""
    features = read_json(checkpoint, CONFIG).get("features", {})
    keys = {f: info.get("fingerprint", {}).get("key") for f, info in features.items()}
    return {f: key for f, key in keys.items() if key}


def attach_store(table: pa.Table, store: pa.Table, manifest: dict,
                 fingerprints: dict[str, str]) -> pa.Table:
    """Add ``emb_<f>``, ``status_<f>``, ``fp_<f>`` from an embedding store for each feature whose
    store fingerprint equals the stage's. Vectors are never null: rows not in the store get a
    zero vector with null status and fingerprint (encoded later); the status says which vectors
    exist (:func:`prodcat.embed.store.feature_matrix`). Features already attached are left alone."""
    import pyarrow.compute as pc

    index = pc.index_in(table["product_id"], value_set=store["product_id"])
    found = index.is_valid().to_numpy(zero_copy_only=False)
    for f, key in fingerprints.items():
        stored = manifest.get("features", {}).get(f, {}).get("fingerprint", {}).get("key")
        if f"fp_{f}" in table.column_names or f"emb_{f}" not in store.column_names or stored != key:
            continue
        # only this table's rows (null where not stored), never the whole store made dense
        taken = store.select([f"emb_{f}", f"status_{f}"]).take(index)
        vectors, present = feature_matrix(taken, f)               # [B, D_f], [B]
        table = table.append_column(f"emb_{f}", vector_column(vectors, present))
        table = table.append_column(f"status_{f}", taken[f"status_{f}"])
        table = table.append_column(f"fp_{f}", pc.if_else(pa.array(found), pa.scalar(key),
                                                          pa.scalar(None, pa.string())))
    return table


def _load_store(config: ScoreConfig, spec: CascadeSpec, log) -> tuple[pa.Table | None, dict, dict]:
    """``(store table or None, manifest, {stage: fingerprints})``."""

    fps = {"text": checkpoint_fingerprints(spec.text_model),
           "multimodal": checkpoint_fingerprints(spec.multimodal_model)}
    if not config.features_from:
        return None, {}, fps
    features = sorted(set(fps["text"]) | set(fps["multimodal"]))
    manifest = read_manifest(config.features_from)
    if manifest is None:
        raise FileNotFoundError(f"no embedding store at {config.features_from}")
    usable = [f for f in features if manifest.get("features", {}).get(f, {}).get(
        "fingerprint", {}).get("key") in (fps["text"].get(f), fps["multimodal"].get(f))]
    columns = ["product_id"] + [c for f in usable for c in (f"emb_{f}", f"status_{f}")]
    store, manifest = read_store(config.features_from, columns=columns,
                                 skip_unreadable=config.skip_unreadable)
    if manifest["skipped"]:
        log(f"[score] skipped {len(manifest['skipped'])} unreadable store part(s) with "
            f"{skipped_rows(manifest):,} rows (--skip-unreadable); those rows are encoded")
    log(f"[score] reusing {', '.join(usable) or 'no'} vectors of {store.num_rows} products from "
        f"{config.features_from} (fingerprints match); other features and rows are encoded")
    return store, manifest, fps


def score(config: ScoreConfig, overwrite: bool = False,
          log: Callable[[str], None] = say) -> dict:
    """Score ``config.input`` into ``config.output``; returns the summary (also ``_summary.json``).

    Summary: ``rows``, ``written_this_run``, ``skipped_already_done``, ``errors``, ``escalated``,
    ``escalation_rate`` (fraction of the rows stage 1 saw this run), ``seconds`` per stage,
    ``products_per_s`` (rows scored this run per second of pipeline time).

    Raises:
        FileNotFoundError: missing input or checkpoint. ValueError: output of another job.
    """

    start = time.perf_counter()
    spec = resolve_cascade(config.model, config.text_model, config.multimodal_model, config.threshold)
    table = read_input(config)
    job = _job_record(config, spec, table)
    _check_job(config.output, job, overwrite)
    done = done_rows(config.output)
    todo = table.filter(pa.array(~np.isin(table["_row"].to_numpy(), done)))
    bad = todo.filter(pa.array(~np.asarray(todo["_error"].is_null())))
    good = todo.filter(todo["_error"].is_null())
    log(f"[score] {table.num_rows:,} rows: {len(done):,} already written, {good.num_rows:,} to "
        f"score, {bad.num_rows:,} that cannot be scored (written with their error)")
    writer = PartWriter(config.output, config.rows_per_file, total=table.num_rows, done=len(done))
    writer.add(prediction_table(bad))
    store, manifest, fps = _load_store(config, spec, log) if good.num_rows else (None, {}, {})
    if store is not None and config.mode != "multimodal":
        good = attach_store(good, store, manifest, fps["text"])
    seconds: dict[str, float] = {}
    escalated_tables: list[pa.Table] = []
    text_rows = 0
    if good.num_rows:
        ensure_ray()
        if config.mode == "multimodal":
            escalated_tables = [good]
        else:
            t0 = time.perf_counter()
            threshold = spec.threshold if config.mode == "cascade" else None
            ds = _stage_dataset(_blocks(good, config.block_rows), config, spec, "text", threshold)
            progress = Progress("score text stage", good.num_rows, "products", log=log)
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                text_rows += batch.num_rows
                progress.advance(batch.num_rows)
                up = (batch["_escalate"].to_numpy(zero_copy_only=False)
                      if "_escalate" in batch.column_names else np.zeros(batch.num_rows, bool))
                writer.add(prediction_table(batch.filter(pa.array(~up))))
                if up.any():
                    escalated_tables.append(_stage2_input(batch.filter(pa.array(up))))
            seconds["text"] = time.perf_counter() - t0
            progress.done(f"{sum(t.num_rows for t in escalated_tables):,} escalated")
    escalated = sum(t.num_rows for t in escalated_tables)
    if escalated:
        t0 = time.perf_counter()
        stage2 = pa.concat_tables(escalated_tables, promote_options="default")
        if store is not None:
            stage2 = attach_store(stage2, store, manifest, fps["multimodal"])
        ds = _stage_dataset(_blocks(stage2, config.block_rows), config, spec, "multimodal", None)
        progress = Progress("score multimodal stage", stage2.num_rows, "products", log=log)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            writer.add(prediction_table(batch))
            progress.advance(batch.num_rows)
        progress.done()
        seconds["multimodal"] = time.perf_counter() - t0
    writer.flush()
    job = dict(job, skipped_unreadable={
        "parts": [p["file"] for p in manifest.get("skipped", [])] if store is not None else [],
        "rows": skipped_rows(manifest) if store is not None else 0})
    return _finish(config, job, table, done, writer, seconds, text_rows, escalated, start, log)


def _stage2_input(batch: pa.Table) -> pa.Table:
    """Escalated rows: inputs plus the reusable vectors; stage-1 outputs dropped."""
    keep = ["_row", *INPUT_COLUMNS, "_error"] + [c for c in batch.column_names
                                                  if c.startswith(("emb_", "status_", "fp_"))]
    return batch.select(keep)


def _finish(config, job, table, done, writer, seconds, text_rows, escalated, start, log) -> dict:
    written_total = len(done) + writer.written
    pipeline_s = sum(seconds.values())
    summary = {**job, "written_this_run": writer.written, "skipped_already_done": int(len(done)),
               "complete": written_total == table.num_rows,
               "errors_this_run": writer.stages.get("error", 0),
               "answered_by": writer.stages, "stage1_rows": text_rows, "escalated": escalated,
               "escalation_rate": round(escalated / text_rows, 4) if text_rows else None,
               "seconds": {k: round(v, 2) for k, v in seconds.items()},
               "pipeline_s": round(pipeline_s, 2), "wall_s": round(time.perf_counter() - start, 2),
               "products_per_s": round((text_rows or escalated) / pipeline_s, 1) if pipeline_s else None,
               "stage_products_per_s": {
                   "text": round(text_rows / seconds["text"], 1) if seconds.get("text") else None,
                   "multimodal": (round(escalated / seconds["multimodal"], 1)
                                  if seconds.get("multimodal") else None)}}
    if summary["complete"]:
        storage.write_text(storage.join(config.output, "_summary.json"), json.dumps(summary, indent=2))
    rate = summary["escalation_rate"]
    log(f"[score] wrote {writer.written:,} rows ({written_total:,}/{table.num_rows:,} done, "
        f"{summary['errors_this_run']:,} with an error); {summary['products_per_s']} products/s; "
        f"escalation rate {'-' if rate is None else f'{100 * rate:.1f} %'} → {config.output}")
    return summary


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
