"""The input of bulk scoring: any product table, CSV or JSON Lines file, or raw platform exports
read through adapters, turned into rows the stages can score.

No row is dropped: a record that cannot be parsed, has no id or no title keeps its position with
an ``_error``, and is written to the output with that error.
"""

from __future__ import annotations

import hashlib
import json
import math

import pyarrow as pa

from prodcat.catalog.adapter import (
    AdapterConfig,
    CategorySpec,
    ColumnMap,
    image_location,
    load_adapter,
    read_export,
)
from prodcat.catalog.text import clean_text
from prodcat.core import storage
from prodcat.score.config import ScoreConfig

INPUT_COLUMNS = ("product_id", "title", "description", "image_uri")


def _input_adapters(config: ScoreConfig) -> list:
    """``[(adapter, product-table columns?)]`` reading ``config.input`` or the adapters' exports.

    Raises:
        ValueError: no input and no adapter, or one input with several adapters.
    """

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
