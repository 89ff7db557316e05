"""Bulk scoring: the two-stage cascade as a Ray Data job, with the same
:class:`prodcat.stage.StageRunner` the Serve replicas use.

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

import hashlib
import json
import math
import time
import uuid
from typing import Callable, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from prodcat import storage
from prodcat.cascade import CascadeSpec, route
from prodcat.config import StrictModel
from prodcat.imaging import ImageLimits
from prodcat.schema import PREDICTION_SCHEMA
from prodcat.stage import StageRunner, resolve_cascade
from prodcat.taxonomy import Taxonomy

ROWS_KEY = b"prodcat_rows"
Mode = Literal["cascade", "text", "multimodal"]


# ---------------------------------------------------------------------- bulk scoring: config
class ScoreConfig(StrictModel):
    """``prodcat score``: what to score, with which cascade, and how the Ray Data job runs."""

    model: str | None = Field(None, description="cascade.json or a folder holding it")
    text_model: str | None = Field(None, description="stage-1 checkpoint (overrides the cascade's)")
    multimodal_model: str | None = Field(None, description="stage-2 checkpoint (overrides the cascade's)")
    threshold: float | None = Field(None, ge=0, description="tau (overrides the cascade's)")
    input: str | None = Field(None, description="Parquet file/folder, CSV or JSON Lines (gzip ok), "
                              "local or s3://; with `adapters` and no input: each adapter's export")
    adapters: list[str] = Field([], description="read through these adapters (built-in platform "
                                "names or AdapterConfig YAML); empty: product-table columns")
    features_from: str | None = Field(None, description="embedding store whose vectors are reused "
                                      "where the fingerprints match (rows it lacks are encoded)")
    output: str = Field(description="predictions folder (Parquet parts), local or s3://")
    mode: Mode = Field("cascade", description="cascade, text (stage 1 only) or multimodal (stage 2 only)")
    limit: int | None = Field(None, gt=0, description="score only the first N input rows")
    text_batch_size: int = Field(256, gt=0, description="rows per stage-1 batch")
    multimodal_batch_size: int = Field(64, gt=0, description="rows per stage-2 batch")
    text_pool_size: int = Field(1, gt=0, description="stage-1 actors")
    multimodal_pool_size: int = Field(1, gt=0, description="stage-2 actors")
    text_num_cpus: float = Field(1.0, ge=0, description="CPUs per stage-1 actor")
    multimodal_num_cpus: float = Field(1.0, ge=0, description="CPUs per stage-2 actor")
    multimodal_num_gpus: float = Field(0.0, ge=0, description="GPUs per stage-2 actor")
    torch_threads: int | None = Field(None, gt=0, description="torch threads per actor "
                                      "(default: its CPUs, at least 1)")
    device: str = Field("auto", description="auto, cpu or cuda")
    rows_per_file: int = Field(8192, gt=0, description="rows per output part (at most)")
    block_rows: int = Field(2048, gt=0, description="rows per Ray Data input block")
    image_limits: ImageLimits = Field(default_factory=ImageLimits)
    title_max_chars: int = Field(256, gt=0, description="cap on the cleaned title")
    description_max_chars: int = Field(2000, gt=0, description="cap on the cleaned description")


# ---------------------------------------------------------------------- bulk scoring: input
INPUT_COLUMNS = ("product_id", "title", "description", "image_uri")


def _input_adapters(config: ScoreConfig) -> list:
    """``[(adapter, product-table columns?)]`` reading ``config.input`` or the adapters' exports.

    Raises:
        ValueError: no input and no adapter, or one input with several adapters.
    """
    from prodcat.catalog.adapter import AdapterConfig, CategorySpec, ColumnMap, load_adapter

    if config.adapters:
        adapters = [load_adapter(a) for a in config.adapters]
        if config.input:
            if len(adapters) > 1:
                raise ValueError("give one adapter per input, or several adapters and no input")
            adapters = [adapters[0].model_copy(update={"path": config.input})]
        return [(a, False) for a in adapters]
    if not config.input:
        raise ValueError("give an input (product-table columns) or adapters")
    name = config.input.lower().removesuffix(".gz")
    fmt = "csv" if name.endswith(".csv") else "jsonl" if name.endswith((".jsonl", ".json")) else "parquet"
    return [(AdapterConfig(platform="input", format=fmt, path=config.input,
                           columns=ColumnMap(source_id="product_id", title="title",
                                             description="description", image="image_uri"),
                           category=CategorySpec(columns=["source_category"]), mapping=None), True)]


def _parquet_files(uri: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no input at {uri}")
    if info.type == pafs.FileType.File:
        return [uri]
    names = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                   if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                   and not i.base_name.startswith(("_", ".")))
    prefix = "s3://" if storage.is_remote(uri) else ""
    return [prefix + n for n in names]


def read_input(config: ScoreConfig) -> pa.Table:
    """Every input row as ``_row`` (position), ``product_id``, ``title``, ``description``,
    ``image_uri`` and ``_error`` (null, or why the row cannot be scored).

    Rows are never dropped: an unparseable record keeps its position with ``parse_error`` and its
    location as product id; a record without id or title gets ``missing_id`` / ``missing_title``.

    Raises:
        FileNotFoundError: when the input does not exist.
    """
    from prodcat.catalog.adapter import read_export

    rows: list[dict] = []
    for adapter, product_table in _input_adapters(config):
        uris = (_parquet_files(adapter.export_uri()) if adapter.format == "parquet"
                else [adapter.export_uri()])
        for uri in uris:
            for location, record, _raw in read_export(adapter.model_copy(update={"path": uri})):
                if config.limit and len(rows) >= config.limit:
                    break
                rows.append(_input_row(len(rows), location, record, adapter, product_table, config))
    schema = pa.schema([("_row", pa.int64()), ("product_id", pa.string()), ("title", pa.string()),
                        ("description", pa.string()), ("image_uri", pa.string()),
                        ("_error", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def _input_row(index: int, location: str, record, adapter, product_table: bool,
               config: ScoreConfig) -> dict:
    """One export record → an input row (see :func:`read_input`)."""
    from prodcat.catalog.adapter import image_location
    from prodcat.catalog.text import clean_text

    row = {"_row": index, "product_id": None, "title": None, "description": None,
           "image_uri": None, "_error": None}
    if isinstance(record, str):
        row.update(product_id=location, _error=f"parse_error: {record}")
        return row
    cols = adapter.columns
    source_id = _as_text(record.get(cols.source_id))
    if source_id is None:
        row.update(product_id=location, _error=f"missing_id: column {cols.source_id!r} is empty")
        return row
    row["product_id"] = source_id.strip() if product_table else f"{adapter.platform}:{source_id.strip()}"
    row["title"] = clean_text(_as_text(record.get(cols.title)), config.title_max_chars)
    if cols.description:
        row["description"] = clean_text(_as_text(record.get(cols.description)),
                                        config.description_max_chars)
    row["image_uri"] = (_as_text(record.get(cols.image)) if product_table and cols.image
                        else image_location(adapter, record, source_id.strip()))
    if row["title"] is None:
        row["_error"] = f"missing_title: column {cols.title!r} is empty"
    return row


def _as_text(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def input_fingerprint(table: pa.Table) -> str:
    """sha256 (16 hex) of the rows' ids and texts: a rerun must see the same input."""
    digest = hashlib.sha256()
    for column in ("product_id", "title", "image_uri"):
        for chunk in table[column].chunks:
            digest.update(json.dumps(chunk.to_pylist()).encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------- bulk scoring: output
def _encode_rows(rows: np.ndarray) -> str:
    """Sorted row positions → JSON list of ``[start, stop)`` ranges."""
    rows = np.sort(np.asarray(rows, np.int64))
    if not len(rows):
        return "[]"
    breaks = np.flatnonzero(np.diff(rows) != 1)
    starts = np.concatenate([[rows[0]], rows[breaks + 1]])
    stops = np.concatenate([rows[breaks] + 1, [rows[-1] + 1]])
    return json.dumps([[int(a), int(b)] for a, b in zip(starts, stops)])


def _decode_rows(text: str) -> np.ndarray:
    ranges = json.loads(text)
    return (np.concatenate([np.arange(a, b) for a, b in ranges]) if ranges
            else np.zeros(0, np.int64))


def list_parts(output: str) -> list[str]:
    """URIs of the finished part files in ``output`` (temporary files excluded)."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(output)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path))
                   if i.type == pafs.FileType.File and i.base_name.startswith("part-")
                   and i.base_name.endswith(".parquet"))
    return [storage.join(output, n) for n in names]


def done_rows(output: str) -> np.ndarray:
    """Input row positions already written to ``output`` (from each part's metadata)."""
    import pyarrow.parquet as pq

    found = [np.zeros(0, np.int64)]
    for uri in list_parts(output):
        fs, path = storage.filesystem(uri)
        meta = pq.read_schema(path, filesystem=fs).metadata or {}
        if ROWS_KEY in meta:
            found.append(_decode_rows(meta[ROWS_KEY].decode()))
    return np.concatenate(found)


def write_part(table: pa.Table, rows: np.ndarray, output: str) -> str:
    """Write predictions (``PREDICTION_SCHEMA``) for input ``rows`` atomically; returns the URI."""
    table = table.cast(PREDICTION_SCHEMA).replace_schema_metadata(
        {ROWS_KEY: _encode_rows(rows).encode()})
    name = f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    final = storage.join(output, name)
    if storage.is_remote(output):
        storage.write_table(table, final)          # one PUT: visible whole or not at all
        return final
    tmp = storage.join(output, f".tmp-{name}")
    storage.write_table(table, tmp)
    fs, _ = storage.filesystem(tmp)
    fs.move(storage.filesystem(tmp)[1], storage.filesystem(final)[1])
    return final


class _PartWriter:
    """Buffers prediction rows and writes a part every ``rows_per_file`` rows."""

    def __init__(self, output: str, rows_per_file: int) -> None:
        self.output, self.rows_per_file = output, rows_per_file
        self.buffer: list[pa.Table] = []
        self.pending = 0
        self.written = 0
        self.stages: dict[str, int] = {}

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.buffer.append(table)
        self.pending += table.num_rows
        while self.pending >= self.rows_per_file:
            whole = pa.concat_tables(self.buffer)
            self._write(whole.slice(0, self.rows_per_file))
            rest = whole.slice(self.rows_per_file)
            self.buffer, self.pending = ([rest] if rest.num_rows else []), rest.num_rows

    def flush(self) -> None:
        if self.pending:
            self._write(pa.concat_tables(self.buffer))
        self.buffer, self.pending = [], 0

    def _write(self, table: pa.Table) -> None:
        for stage in table["stage"].to_pylist():
            key = stage or "error"
            self.stages[key] = self.stages.get(key, 0) + 1
        write_part(table.drop_columns(["_row"]), table["_row"].to_numpy(), self.output)
        self.written += table.num_rows


def _prediction_table(batch: pa.Table) -> pa.Table:
    """The prediction columns (plus ``_row``) of a scored or failed batch."""
    n = batch.num_rows
    def col(name, typ):
        return batch[name] if name in batch.column_names else pa.nulls(n, typ)
    return pa.table({"_row": batch["_row"], "product_id": batch["product_id"],
                     "category_id": col("category_id", pa.int64()),
                     "category_path": col("category_path", pa.string()),
                     "level_confidence": col("level_confidence", pa.list_(pa.float32())),
                     "stage": col("stage", pa.string()),
                     "model_version": col("model_version", pa.string()),
                     "error": col("_error", pa.string())})


# ---------------------------------------------------------------------- bulk scoring: actors
class StageActor:
    """Ray Data callable class: one :class:`StageRunner` per actor, pyarrow batches in and out.

    Adds ``category_id``, ``category_path``, ``level_confidence``, ``confidence``, ``stage``,
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
                mask = pa.array(~escalate)
                result = result.append_column(f"emb_{f}", pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.reshape(-1)), dim, mask=mask))
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
    from prodcat.checkpoint import WEIGHTS, weights_version

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
    """``{feature: encoder fingerprint key}`` recorded in a checkpoint's ``config.json``."""
    from prodcat.checkpoint import CONFIG, read_json

    features = read_json(checkpoint, CONFIG).get("features", {})
    return {f: info.get("fingerprint", {}).get("key") for f, info in features.items()}


def attach_store(table: pa.Table, store: pa.Table, manifest: dict,
                 fingerprints: dict[str, str]) -> pa.Table:
    """Add ``emb_<f>``, ``status_<f>``, ``fp_<f>`` from an embedding store for each feature whose
    store fingerprint equals the stage's (rows not in the store get nulls: encoded later).
    Features already attached are left alone."""
    import pyarrow.compute as pc

    index = pc.index_in(table["product_id"], value_set=store["product_id"])
    found = index.is_valid()
    for f, key in fingerprints.items():
        stored = manifest.get("features", {}).get(f, {}).get("fingerprint", {}).get("key")
        if f"fp_{f}" in table.column_names or f"emb_{f}" not in store.column_names or stored != key:
            continue
        taken = store.select([f"emb_{f}", f"status_{f}"]).take(index)
        table = table.append_column(f"emb_{f}", taken[f"emb_{f}"])
        table = table.append_column(f"status_{f}", taken[f"status_{f}"])
        table = table.append_column(f"fp_{f}", pc.if_else(found, pa.scalar(key), pa.scalar(None, pa.string())))
    return table


def _load_store(config: ScoreConfig, spec: CascadeSpec, log) -> tuple[pa.Table | None, dict, dict]:
    """``(store table or None, manifest, {stage: fingerprints})``."""
    from prodcat.embedding import read_store

    fps = {"text": checkpoint_fingerprints(spec.text_model),
           "multimodal": checkpoint_fingerprints(spec.multimodal_model)}
    if not config.features_from:
        return None, {}, fps
    features = sorted(set(fps["text"]) | set(fps["multimodal"]))
    _, manifest = read_store(config.features_from, columns=["product_id"])
    usable = [f for f in features if manifest.get("features", {}).get(f, {}).get(
        "fingerprint", {}).get("key") in (fps["text"].get(f), fps["multimodal"].get(f))]
    columns = ["product_id"] + [c for f in usable for c in (f"emb_{f}", f"status_{f}")]
    store, manifest = read_store(config.features_from, columns=columns)
    log(f"score: reusing {', '.join(usable) or 'no'} vectors of {store.num_rows} products from "
        f"{config.features_from} (fingerprints match); other features and rows are encoded")
    return store, manifest, fps


def score(config: ScoreConfig, overwrite: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """Score ``config.input`` into ``config.output``; returns the summary (also ``_summary.json``).

    Summary: ``rows``, ``written_this_run``, ``skipped_already_done``, ``errors``, ``escalated``,
    ``escalation_rate`` (fraction of the rows stage 1 saw this run), ``seconds`` per stage,
    ``products_per_s`` (rows scored this run per second of pipeline time).

    Raises:
        FileNotFoundError: missing input or checkpoint. ValueError: output of another job.
    """
    from prodcat.runtime import ensure_ray

    start = time.perf_counter()
    spec = resolve_cascade(config.model, config.text_model, config.multimodal_model, config.threshold)
    table = read_input(config)
    job = _job_record(config, spec, table)
    _check_job(config.output, job, overwrite)
    done = done_rows(config.output)
    todo = table.filter(pa.array(~np.isin(table["_row"].to_numpy(), done)))
    bad = todo.filter(pa.array(~np.asarray(todo["_error"].is_null())))
    good = todo.filter(todo["_error"].is_null())
    log(f"score: {table.num_rows} rows, {len(done)} already written, {good.num_rows} to score, "
        f"{bad.num_rows} with errors")
    writer = _PartWriter(config.output, config.rows_per_file)
    writer.add(_prediction_table(bad))
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
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                text_rows += batch.num_rows
                up = (batch["_escalate"].to_numpy(zero_copy_only=False)
                      if "_escalate" in batch.column_names else np.zeros(batch.num_rows, bool))
                writer.add(_prediction_table(batch.filter(pa.array(~up))))
                if up.any():
                    escalated_tables.append(_stage2_input(batch.filter(pa.array(up))))
            seconds["text"] = time.perf_counter() - t0
            log(f"score: stage 1 done: {text_rows} rows in {seconds['text']:.1f} s, "
                f"{sum(t.num_rows for t in escalated_tables)} escalated")
    escalated = sum(t.num_rows for t in escalated_tables)
    if escalated:
        t0 = time.perf_counter()
        stage2 = pa.concat_tables(escalated_tables, promote_options="default")
        if store is not None:
            stage2 = attach_store(stage2, store, manifest, fps["multimodal"])
        ds = _stage_dataset(_blocks(stage2, config.block_rows), config, spec, "multimodal", None)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            writer.add(_prediction_table(batch))
        seconds["multimodal"] = time.perf_counter() - t0
    writer.flush()
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
    log(f"score: wrote {writer.written} rows ({written_total}/{table.num_rows} done); "
        f"{summary['products_per_s']} products/s; escalation rate {summary['escalation_rate']}")
    return summary


def read_predictions(output: str) -> pa.Table:
    """All predictions in an output folder (``PREDICTION_SCHEMA``)."""
    parts = [storage.read_table(uri) for uri in list_parts(output)]
    if not parts:
        return PREDICTION_SCHEMA.empty_table()
    return pa.concat_tables([p.cast(PREDICTION_SCHEMA) for p in parts])


def evaluate_predictions(predictions: pa.Table, products: pa.Table, taxonomy: Taxonomy,
                         split: str | None = "test") -> dict:
    """hP/hR/hF (``prodcat.metrics.hierarchical_prf``) of predictions against a product table's
    labels, on ``split`` (None: all labelled rows), overall and per answering stage."""
    import pyarrow.compute as pc

    from prodcat.metrics import hierarchical_prf

    labels = products.select(["product_id", "category_id", "split"])
    if split:
        labels = labels.filter(pc.equal(labels["split"], split))
    labels = labels.filter(pc.is_valid(labels["category_id"]))
    index = pc.index_in(labels["product_id"], value_set=predictions["product_id"])
    labels, index = labels.filter(pc.is_valid(index)), index.filter(pc.is_valid(index))
    pred = predictions.take(index)

    def node(cid) -> int:
        return taxonomy.node(int(cid)) if cid is not None and cid in taxonomy else 0

    true_nodes = np.asarray([node(c) for c in labels["category_id"].to_pylist()], np.int64)
    pred_nodes = np.asarray([node(c) for c in pred["category_id"].to_pylist()], np.int64)
    stages = np.asarray([s or "error" for s in pred["stage"].to_pylist()], object)
    out = {"split": split, "products": int(len(true_nodes)),
           **hierarchical_prf(taxonomy, true_nodes, pred_nodes)}
    for stage in sorted(set(stages)):
        sel = stages == stage
        out[f"{stage}_products"] = int(sel.sum())
        out[f"{stage}_hF"] = hierarchical_prf(taxonomy, true_nodes[sel], pred_nodes[sel])["hF"]
    return out
