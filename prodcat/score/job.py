"""Bulk scoring: the two-stage cascade as a Ray Data job, with the same
:class:`prodcat.cascade.stage.StageRunner` the Serve replicas use (the stage package after
:mod:`prodcat.cascade`, which fits the cascade this job runs).

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

from prodcat.cascade.policy import route
from prodcat.cascade.spec import CascadeSpec, resolve_cascade
from prodcat.cascade.stage import StageRunner
from prodcat.core import storage
from prodcat.core.console import Progress, say
from prodcat.core.runtime import ensure_ray
from prodcat.embed.store import skipped_rows, vector_column
from prodcat.models.files import checkpoint_version
from prodcat.score.config import ScoreConfig
from prodcat.score.features import attach_store, load_store
from prodcat.score.inputs import INPUT_COLUMNS, input_fingerprint, read_input
from prodcat.score.parts import PartWriter, done_rows, prediction_table


class StageActor:
    """Ray Data callable class: one :class:`StageRunner` per actor, pyarrow batches in and out.

    Adds ``category_id``, ``category_path``, ``level_ids``, ``valid_path``, ``level_confidence``, ``confidence``, ``stage``,
    ``model_version``; with ``threshold`` (stage 1 of a cascade) also ``_escalate`` and the
    reusable feature vectors of the escalated rows (``emb_/status_/fp_<f>``).
    """

    def __init__(self, checkpoint: str, stage: str, temperature: float | None, device: str,
                 confidence_mode: str, num_threads: int, image_limits: dict,
                 threshold: float | None = None, abstain: list | None = None) -> None:
        self.runner = StageRunner(checkpoint, stage, temperature, device, confidence_mode,
                                  num_threads, image_limits)
        self.threshold = threshold
        self.abstain = abstain

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns = {k: batch[k].to_pylist() for k in INPUT_COLUMNS}
        reuse = [c for c in batch.column_names if c.startswith(("emb_", "status_", "fp_"))]
        for c in reuse:
            columns[c] = batch[c].to_pylist()
        keep = ([f for f, info in self.runner.model.encoders.items() if info.get("modality") == "text"]
                if self.threshold is not None else [])
        out = self.runner.predict_batch(columns, keep_features=keep, abstain=self.abstain)
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
        result = result.append_column("stopped_at_level", pa.array(out["stopped_at_level"], pa.int32()))
        result = result.append_column("stop_reason", pa.array(out["stop_reason"], pa.string()))
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
            "threshold": threshold,
            "abstain": spec.abstain_thresholds("text" if text else "multimodal", config.abstain_target)})


def _blocks(table: pa.Table, rows: int) -> list[pa.Table]:
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)] or [table]


def _job_record(config: ScoreConfig, spec: CascadeSpec, table: pa.Table) -> dict:

    versions = {name: checkpoint_version(uri)       # neural or decision-level checkpoints alike
                for name, uri in (("text", spec.text_model), ("multimodal", spec.multimodal_model))}
    return {"input": config.input, "adapters": config.adapters, "rows": table.num_rows,
            "features_from": config.features_from,
            "input_fingerprint": input_fingerprint(table), "mode": config.mode,
            "abstain_target": config.abstain_target,
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
        keys = ("input_fingerprint", "rows", "mode", "threshold", "model_versions", "abstain_target")
        changed = [k for k in keys if old.get(k) != job.get(k)]
        if changed:
            raise ValueError(f"{output} holds predictions of another job ({', '.join(changed)} "
                             "differ); use a new output folder or --overwrite")
        return
    storage.write_text(uri, json.dumps(job, indent=2))


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
    for stage in ("text", "multimodal"):       # a cascade without thresholds fails before any work
        spec.abstain_thresholds(stage, config.abstain_target)
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
    store, manifest, fps = load_store(config, spec, log) if good.num_rows else (None, {}, {})
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
