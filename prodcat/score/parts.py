"""The output of bulk scoring: prediction part files that make a run resumable.

Each part (``PREDICTION_SCHEMA``) appears atomically and names the input rows it holds (Parquet
metadata ``prodcat_rows``, as ``[start, stop)`` ranges), so a rerun after an interruption scores
only the rows not yet written, and every input row appears exactly once.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid

import numpy as np
import pyarrow as pa

from prodcat.core import storage
from prodcat.core.schema import PREDICTION_SCHEMA
from prodcat.core.telemetry import inc, set_gauge

ROWS_KEY = b"prodcat_rows"


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
    return storage.list_files(output, "part-", ".parquet")


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
    return storage.write_table_atomic(table, storage.join(output, name))


class PartWriter:
    """Buffers prediction rows and writes a part every ``rows_per_file`` rows; each part written
    is counted in the Prometheus metrics (:mod:`prodcat.core.telemetry`): rows by outcome and
    stage, errors by reason, and the job's progress (``done`` rows of ``total`` were written
    before this run)."""

    def __init__(self, output: str, rows_per_file: int, total: int = 0, done: int = 0) -> None:
        self.output, self.rows_per_file = output, rows_per_file
        self.total, self.done = total, done
        self.run = posixpath.basename(str(output).rstrip("/")) or str(output)
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
        written: dict[str, int] = {}
        for stage in table["stage"].to_pylist():
            key = stage or "error"
            written[key] = written.get(key, 0) + 1
        write_part(table.drop_columns(["_row"]), table["_row"].to_numpy(), self.output)
        self.written += table.num_rows
        for key, n in written.items():
            self.stages[key] = self.stages.get(key, 0) + n
            inc("prodcat_score_rows", n, outcome="error" if key == "error" else "predicted", stage=key)
        for error in table["error"].drop_null().to_pylist():
            inc("prodcat_score_row_errors", reason=error.split(":", 1)[0].strip() or "unknown")
        if self.total:
            set_gauge("prodcat_score_progress", (self.done + self.written) / self.total, run=self.run)


def prediction_table(batch: pa.Table) -> pa.Table:
    """The prediction columns (plus ``_row``) of a scored or failed batch."""
    n = batch.num_rows
    def col(name, typ):
        return batch[name] if name in batch.column_names else pa.nulls(n, typ)
    return pa.table({"_row": batch["_row"], "product_id": batch["product_id"],
                     "category_id": col("category_id", pa.int64()),
                     "category_path": col("category_path", pa.string()),
                     "level_ids": col("level_ids", pa.list_(pa.int64())),
                     "valid_path": col("valid_path", pa.bool_()),
                     "level_confidence": col("level_confidence", pa.list_(pa.float32())),
                     "stage": col("stage", pa.string()),
                     "model_version": col("model_version", pa.string()),
                     "error": col("_error", pa.string()),
                     "stopped_at_level": col("stopped_at_level", pa.int32()),
                     "stop_reason": col("stop_reason", pa.string())})


def read_predictions(output: str) -> pa.Table:
    """All predictions in an output folder (``PREDICTION_SCHEMA``)."""
    parts = [storage.read_table(uri) for uri in list_parts(output)]
    if not parts:
        return PREDICTION_SCHEMA.empty_table()
    return pa.concat_tables([_conform(p).cast(PREDICTION_SCHEMA) for p in parts])


def _conform(part: pa.Table) -> pa.Table:
    """A part in ``PREDICTION_SCHEMA``'s column order; columns added to the schema after the part
    was written (the partial-path ones) are null."""
    for field in PREDICTION_SCHEMA:
        if field.name not in part.column_names:
            part = part.append_column(field.name, pa.nulls(part.num_rows, field.type))
    return part.select(PREDICTION_SCHEMA.names)
