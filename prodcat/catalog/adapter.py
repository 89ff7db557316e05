"""Config-driven catalogue adapters: CSV, JSON Lines or Parquet exports → normalised records.

Every platform is an :class:`AdapterConfig` (YAML): where its export is, which columns hold the id,
title, description, brand and image, how its category path is spelled. The built-in platforms
(``platforms/myntra.yaml``, ``hm.yaml``, ``flipkart.yaml``) are such configs, so a new platform needs
a config, not code. Category *parsers* (how one cell becomes path segments) are a registry.

Reading never loses a record: each one the parser delimits comes out either as a normalised dict or
as a :class:`Reject` with a reason code (``parse_error``, ``non_utf8``, ``missing_title``, ...).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import posixpath
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import pyarrow.parquet as pq
from pydantic import Field

from prodcat.catalog.text import clean_text
from prodcat.core import storage
from prodcat.core.config import StrictModel, load_config
from prodcat.core.paths import catalogs_dir
from prodcat.core.registry import Registry
from prodcat.core.taxonomy import SEPARATOR

PLATFORMS_DIR = Path(__file__).parent / "platforms"
RAW_CAP = 2000  # characters of a raw record kept in the rejects file

category_parsers: Registry[Callable[[Any, "CategorySpec"], list[str]]] = Registry("category parser")


class ColumnMap(StrictModel):
    """Which export column holds each product field (JSON Lines: top-level keys)."""

    source_id: str = Field(description="the platform's product id (kept as text, leading zeros too)")
    title: str = Field(description="product title / name")
    description: str | None = Field(None, description="description, HTML allowed")
    brand: str | None = Field(None, description="brand name")
    image: str | None = Field(None, description="column with an image file name or URI")


class CategorySpec(StrictModel):
    """How the platform's own category path is read."""

    columns: list[str] = Field(description="columns forming the path, top level first")
    parser: str = Field("plain", description="registered parser for each cell: plain, json_list")
    separator: str | None = Field(None, description="split a cell into levels on this string")
    max_segments: int | None = Field(None, description="keep at most this many top segments")


class AdapterConfig(StrictModel):
    """One platform export. ``{catalogs}`` in ``path`` is the shared catalogues folder."""

    platform: str = Field(description="platform name, the prefix of product_id")
    format: Literal["csv", "jsonl", "parquet"] = Field(description="export file format")
    path: str = Field(description="export file (local or s3://); gzip is detected")
    columns: ColumnMap
    category: CategorySpec
    image_template: str | None = Field(
        None, description="image location relative to the export's folder, formatted with the "
        "record's fields, e.g. images/{source_id}.jpg; absolute paths and URIs are kept")
    variant_key: str | None = Field(
        None, description="the platform's own key of product variants, formatted like "
        "image_template, e.g. '{source_id:.7}' (H&M: the product code of an article); products "
        "sharing it are one near-duplicate group and never straddle splits")
    mapping: str | None = Field(
        "builtin", description="category mapping YAML; 'builtin' = the project's table for this "
        "platform; null = unlabelled catalogue (category_id left null)")
    title_max_chars: int = Field(256, gt=0, description="cap on the cleaned title")
    description_max_chars: int = Field(2000, gt=0, description="cap on the cleaned description")

    def export_uri(self) -> str:
        """The export's location with ``{catalogs}`` resolved through the shared-folder resolver."""
        if "{catalogs}" in self.path:

            return self.path.replace("{catalogs}", str(catalogs_dir()))
        return self.path


@dataclass(frozen=True)
class Reject:
    """A record that did not make it into the product table, and why."""

    platform: str
    source_id: str | None
    location: str
    reason: str
    detail: str
    raw: str

    def as_row(self) -> dict:
        return {"platform": self.platform, "source_id": self.source_id, "location": self.location,
                "reason": self.reason, "detail": self.detail, "raw": self.raw[:RAW_CAP]}


def builtin_platforms() -> list[str]:
    """Names of the platforms whose adapter configs ship with prodcat."""
    return sorted(p.stem for p in PLATFORMS_DIR.glob("*.yaml"))


def load_adapter(name_or_path: str, overrides: list[str] | None = None) -> AdapterConfig:
    """A built-in platform's config by name, or a config file (local or ``s3://``).

    Raises:
        KeyError: for a name that is neither a built-in platform nor an existing file.
    """
    path = PLATFORMS_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        if not (storage.is_remote(name_or_path) or Path(name_or_path).exists()):
            raise KeyError(f"unknown platform {name_or_path!r}: not a file, and the built-in "
                           f"platforms are {', '.join(builtin_platforms())}")
        path = name_or_path
    return load_config(AdapterConfig, path, overrides or [])


# ---------------------------------------------------------------------- reading exports
def _decode(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    # surrogateescape keeps invalid bytes visible (as lone surrogates) so the row is rejected
    # with reason non_utf8 instead of the whole file failing to decode
    return data.decode("utf-8", errors="surrogateescape")


def _read_jsonl(text: str, uri: str) -> Iterator[tuple[str, dict | str, str]]:
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield f"{uri}:{lineno}", f"invalid JSON: {err.msg} at column {err.colno}", line
            continue
        if not isinstance(record, dict):
            yield f"{uri}:{lineno}", f"expected a JSON object, got {type(record).__name__}", line
            continue
        yield f"{uri}:{lineno}", record, line


def _read_csv(text: str, uri: str) -> Iterator[tuple[str, dict | str, str]]:
    lines = text.splitlines(keepends=True)
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    start = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raw = "".join(lines[start:reader.line_num])
            yield f"{uri}:{start + 1}-{reader.line_num}", f"malformed CSV (quoting): {err}", raw
            start = reader.line_num
            continue
        raw = "".join(lines[start:reader.line_num])
        location = f"{uri}:{start + 1}"
        start = reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            yield location, f"expected {len(header)} fields, found {len(row)}", raw
            continue
        yield location, dict(zip(header, row)), raw


def _read_parquet(uri: str) -> Iterator[tuple[str, dict | str, str]]:
    fs, path = storage.filesystem(uri)
    table = pq.read_table(path, filesystem=fs)
    for index, record in enumerate(table.to_pylist()):
        yield f"{uri}#row{index}", record, json.dumps(record, default=str, ensure_ascii=False)


def read_export(config: AdapterConfig) -> Iterator[tuple[str, dict | str, str]]:
    """Yield ``(location, record or error message, raw text)`` for every record in the export.

    Raises:
        FileNotFoundError: when the export itself is missing.
    """
    uri = config.export_uri()
    if config.format == "parquet":
        yield from _read_parquet(uri)
        return
    text = _decode(storage.read_bytes(uri))
    yield from (_read_jsonl if config.format == "jsonl" else _read_csv)(text, uri)


# ---------------------------------------------------------------------- normalising
@category_parsers.register("plain")
def _plain(cell: Any, spec: CategorySpec) -> list[str]:
    text = "" if cell is None else str(cell)
    return text.split(spec.separator) if spec.separator else [text]


@category_parsers.register("json_list")
def _json_list(cell: Any, spec: CategorySpec) -> list[str]:
    """A JSON list holding one path string (Flipkart's ``product_category_tree``)."""
    values = json.loads(cell) if isinstance(cell, str) else cell
    if not isinstance(values, list) or not values:
        raise ValueError("expected a non-empty JSON list")
    first = str(values[0])
    return first.split(spec.separator) if spec.separator else [first]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _has_bad_bytes(value: Any) -> bool:
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value)
    if isinstance(value, dict):
        return any(_has_bad_bytes(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_bad_bytes(v) for v in value)
    return False


def source_path(config: AdapterConfig, record: dict) -> str:
    """The platform's own category path, ``" > "``-joined.

    Raises:
        ValueError: when the category cells are missing or cannot be parsed.
    """
    parser = category_parsers.get(config.category.parser)
    segments: list[str] = []
    for column in config.category.columns:
        segments += [s.strip() for s in parser(record.get(column), config.category)]
    segments = [s for s in segments if s]
    if config.category.max_segments:
        segments = segments[: config.category.max_segments]
    if not segments:
        raise ValueError(f"no category in {config.category.columns}")
    return SEPARATOR.join(segments)


def _format(template: str, record: dict, source_id: str) -> str | None:
    """``template`` formatted with the record's fields and ``source_id`` (None when it names a
    field the record lacks)."""
    fields = {k: ("" if v is None else v) for k, v in record.items()}
    fields["source_id"] = source_id
    try:
        return string.Formatter().vformat(template, (), fields)
    except (KeyError, ValueError, IndexError):
        return None


def image_location(config: AdapterConfig, record: dict, source_id: str) -> str | None:
    """Absolute path or URI of the product's image, or ``None`` when it names none."""
    value = None
    if config.image_template:
        value = _format(config.image_template, record, source_id)
        if value is None:
            return None
        if config.columns.image and not _text(record.get(config.columns.image)):
            return None
    elif config.columns.image:
        value = _text(record.get(config.columns.image))
    if not value:
        return None
    if "://" in value or value.startswith("/"):
        return value
    base = config.export_uri()
    return (posixpath.join(posixpath.dirname(base), value) if storage.is_remote(base)
            else str(Path(base).parent / value))


def normalize(config: AdapterConfig, location: str, record: dict, raw: str) -> dict | Reject:
    """One export record → a partial product row (no category id or split yet), or a reject."""
    cols = config.columns
    source_id = _text(record.get(cols.source_id))

    def reject(reason: str, detail: str) -> Reject:
        return Reject(config.platform, source_id and source_id.strip(), location, reason, detail, raw)

    if _has_bad_bytes(record):
        return reject("non_utf8", "the record contains bytes that are not valid UTF-8")
    if source_id is None:
        return reject("missing_id", f"column {cols.source_id!r} is empty")
    source_id = source_id.strip()
    title_raw = _text(record.get(cols.title))
    title = clean_text(title_raw, config.title_max_chars)
    if title is None:
        return reject("missing_title", f"column {cols.title!r} is empty")
    try:
        category = source_path(config, record)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        return reject("missing_category", str(err))
    description_raw = _text(record.get(cols.description)) if cols.description else None
    return {
        "product_id": f"{config.platform}:{source_id}",
        "platform": config.platform,
        "title": title,
        "description": clean_text(description_raw, config.description_max_chars),
        "title_raw": title_raw,
        "description_raw": description_raw,
        "image_uri": image_location(config, record, source_id),
        "brand": clean_text(_text(record.get(cols.brand)), 128) if cols.brand else None,
        "source_category": category,
        "variant_key": (_format(config.variant_key, record, source_id) or None
                        if config.variant_key else None),
    }


def read_products(config: AdapterConfig) -> Iterator[dict | Reject]:
    """Every record of the export, normalised or rejected (``parse_error`` for unparseable ones)."""
    for location, record, raw in read_export(config):
        if isinstance(record, str):
            yield Reject(config.platform, None, location, "parse_error", record, raw)
        else:
            yield normalize(config, location, record, raw)
