"""The embedding store: Parquet part files plus ``manifest.json`` (``docs/contracts.md``).

A part holds ``product_id`` and, per feature ``f``, ``emb_<f>`` (``fixed_size_list<float32>
[D_f]``, never null: zeros when the modality failed or is absent) and ``status_<f>`` (``ok`` or the
reason). The status column is the only validity signal: a vector is present exactly when its
status is ``ok``. Every part carries the manifest (encoder configs and weight fingerprints, store
format ``version``) under the Parquet metadata key ``prodcat``, so vectors from other weights are
never mixed in silently. Parts appear atomically; a rerun embeds only the products not yet in the
store.

Store format versions (:data:`STORE_VERSION`):

- 1: null entries inside the fixed-size vector columns for missing modalities. Only pyarrow >= 26
  reads such Parquet files back (17 and 25 fail with "Expected all lists to be of size=D", 21-23
  refuse to write them), so a version-1 part is read where this pyarrow can and otherwise refused
  with the conversion command; :func:`upgrade_store` (``prodcat embed --upgrade-store``) rewrites
  it as version 2.
- 2: no nulls inside fixed-size lists (zero vectors, status column as the validity signal); reads
  and writes alike on every pyarrow the project accepts (>= 17, Ray Data 2.60's minimum).

A part that cannot be read stops :func:`read_store` with :class:`UnreadableStorePart` (the file
named) unless the caller passes ``skip_unreadable=True``; then the parts left out and their row
counts are listed in the returned manifest under ``"skipped"``.
"""

from __future__ import annotations

import json
import uuid
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa

from prodcat.core import storage
from prodcat.core.errors import DataError, UnreadableFile

STORE_VERSION = 2


MANIFEST = "manifest.json"


PARQUET_KEY = b"prodcat"

#: the pyarrow release that first reads version-1 parts (null fixed-size-list entries) back
V1_READABLE_FROM = 26


class StoreMismatch(ValueError):
    """An embedding store made with other encoders (fingerprints) than the ones asked for."""


class StoreFormatError(DataError, ValueError):
    """A store written in an older format than this code writes, where it cannot be used as is;
    the message names the store and the command that converts it."""


class UnreadableStorePart(UnreadableFile):
    """A store part that cannot be read (corrupt, truncated, unreadable by this pyarrow);
    ``uri`` names the file. Pass ``skip_unreadable`` (``--skip-unreadable``) to leave it out."""

    def __init__(self, uri: str, detail: str) -> None:
        super().__init__(uri, detail, "Fix or remove the file (a rerun of `prodcat embed` "
                         "re-embeds its products), or pass --skip-unreadable to go on without "
                         "its rows")


def upgrade_command(store: str) -> str:
    """The command that converts the store at ``store`` to :data:`STORE_VERSION`."""
    return f"prodcat embed --upgrade-store --output {store}"


# -- the store -------------------------------------------------------------------------------------
def make_manifest(features: dict[str, dict]) -> dict:
    """The store manifest for ``FeatureExtractor.describe()`` output."""
    return {"version": STORE_VERSION, "features": features}


def _signature(manifest: dict) -> dict[str, tuple]:
    return {f: (d["fingerprint"]["key"], d["dim"]) for f, d in manifest["features"].items()}


def check_compatible(found: dict, wanted: dict, where: str) -> None:
    """Raise :class:`StoreMismatch` unless both manifests have the same features, fingerprints
    and dimensions (batch sizes, devices and the store format version may differ)."""
    a, b = _signature(found), _signature(wanted)
    if a == b:
        return
    diff = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
    detail = "; ".join(f"{f}: store {a.get(f, ('absent',))[0]} vs config {b.get(f, ('absent',))[0]}"
                       for f in diff)
    raise StoreMismatch(f"{where} was made with other encoders ({detail}). Write to a new output "
                        "folder, or pass --overwrite to replace the store.")


def store_schema(manifest: dict) -> pa.Schema:
    """Arrow schema of a store part for ``manifest`` (vector columns not nullable)."""
    fields = [pa.field("product_id", pa.string(), nullable=False)]
    for feature, info in manifest["features"].items():
        fields.append(pa.field(f"emb_{feature}", pa.list_(pa.float32(), info["dim"]), nullable=False))
        fields.append(pa.field(f"status_{feature}", pa.string(), nullable=False))
    meta = dict(manifest, version=STORE_VERSION)
    return pa.schema(fields, metadata={PARQUET_KEY: json.dumps(meta).encode()})


def vector_column(vectors: np.ndarray, ok: np.ndarray) -> pa.FixedSizeListArray:
    """``float32 [B, D]`` and ``ok`` ``bool [B]`` → a fixed_size_list<float32>[D] column without
    nulls, rows that are not ``ok`` zero-filled (the store's format 2)."""
    vectors = np.array(vectors, dtype=np.float32, copy=True).reshape(len(ok), -1)
    vectors[~np.asarray(ok, bool)] = 0.0
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                             vectors.shape[1])


def to_store_table(batch: Mapping, manifest: dict) -> pa.Table:
    """A batch with ``emb_<f>`` ``[B, D_f]`` and ``status_<f>`` → a store table (zero vectors
    where the status is not ``ok``; no nulls anywhere)."""
    schema = store_schema(manifest)
    columns = [pa.array([str(p) for p in batch["product_id"]], pa.string())]
    for feature, info in manifest["features"].items():
        status = np.array([str(s) for s in batch[f"status_{feature}"]], dtype=object)
        emb = np.asarray(batch[f"emb_{feature}"], dtype=np.float32).reshape(len(status), info["dim"])
        columns.append(vector_column(emb, status == "ok"))
        columns.append(pa.array(list(status), pa.string()))
    return pa.Table.from_arrays(columns, schema=schema)


def write_part(table: pa.Table, store: str, run_id: str) -> str:
    """Write one part file atomically (local: temp name then rename; S3: one PUT). Returns its name."""
    name = f"part-{run_id}-{uuid.uuid4().hex[:10]}.parquet"
    storage.write_table_atomic(table, storage.join(store, name))
    return name


def list_parts(store: str) -> list[str]:
    """URIs of the store's part files, sorted (temporary files excluded)."""
    return storage.list_files(store, "part-", ".parquet")


def read_manifest(store: str) -> dict | None:
    """The store's manifest, or None when there is no store at ``store``."""
    uri = storage.join(store, MANIFEST)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def _normalize(table: pa.Table) -> pa.Table:
    """A version-1 part in memory → version 2: null vectors become zero vectors (their status
    already says why they are missing)."""
    for i, field in enumerate(table.schema):
        if field.name.startswith("emb_") and pa.types.is_fixed_size_list(field.type):
            column = table.column(i).combine_chunks()
            ok = column.is_valid().to_numpy(zero_copy_only=False)
            dense = np.zeros((len(column), field.type.list_size), np.float32)
            if ok.any():
                dense[ok] = column.filter(pa.array(ok)).flatten().to_numpy(
                    zero_copy_only=False).reshape(-1, field.type.list_size)
            table = table.set_column(i, pa.field(field.name, field.type, nullable=False),
                                     vector_column(dense, ok))
    return table


def part_rows(uri: str) -> int | None:
    """Rows of a part from its Parquet footer, None when even the footer cannot be read."""
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            return pq.read_metadata(f).num_rows
    except (pa.ArrowException, OSError, ValueError):
        return None


def read_part(uri: str, manifest: dict, columns: list[str] | None = None,
              store: str | None = None) -> pa.Table:
    """One part in format 2 (a version-1 part is converted in memory), checked against the
    manifest.

    Raises:
        StoreMismatch: the part has no prodcat metadata or other encoders.
        StoreFormatError: a version-1 part this pyarrow cannot read (the message says how to
            convert the store).
        UnreadableStorePart: any other file that cannot be read.
    """
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            meta = pq.read_schema(f).metadata or {}
    except (pa.ArrowException, OSError, ValueError) as err:
        raise UnreadableStorePart(uri, f"{type(err).__name__}: {err}") from None
    if PARQUET_KEY not in meta:
        raise StoreMismatch(f"{uri} has no prodcat metadata: not a part of this store")
    found = json.loads(meta[PARQUET_KEY])
    check_compatible(found, manifest, uri)
    try:
        with fs.open_input_file(path) as f:
            table = pq.read_table(f, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as err:
        if found.get("version", 1) < 2:
            raise StoreFormatError(
                f"{uri} is in store format {found.get('version', 1)} (null vectors inside "
                f"fixed-size lists), which pyarrow {pa.__version__} cannot read ({err}). Convert "
                f"the store once with `{upgrade_command(store or uri.rsplit('/', 1)[0])}` where "
                f"pyarrow >= {V1_READABLE_FROM} is installed (the version the project pins)") from None
        raise UnreadableStorePart(uri, f"{type(err).__name__}: {err}") from None
    return _normalize(table) if found.get("version", 1) < 2 else table


def read_store(store: str, columns: list[str] | None = None,
               skip_unreadable: bool = False) -> tuple[pa.Table, dict]:
    """``(table, manifest)`` of an embedding store; a product embedded twice is kept once.

    Every vector column comes back without nulls (a version-1 store is converted in memory where
    this pyarrow reads it). With ``skip_unreadable``, parts that cannot be read are left out and
    listed in ``manifest["skipped"]`` (``{"file", "rows" (from the footer, None if unknown),
    "error"}``); the list is empty otherwise.

    Raises:
        FileNotFoundError: no manifest at ``store``.
        StoreMismatch: a part made with other encoders than the manifest names.
        StoreFormatError: a version-1 part that this pyarrow cannot read.
        UnreadableStorePart: a part that cannot be read (unless ``skip_unreadable``).
    """
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no embedding store at {store} (no {MANIFEST})")
    tables, skipped = [], []
    for uri in list_parts(store):
        try:
            tables.append(read_part(uri, manifest, columns, store))
        except UnreadableStorePart as err:
            if not skip_unreadable:
                raise
            skipped.append({"file": uri, "rows": part_rows(uri), "error": str(err.args[0])})
    manifest = dict(manifest, skipped=skipped)
    if not tables:
        empty = store_schema(manifest).empty_table()
        return empty.select(columns or empty.column_names), manifest
    table = pa.concat_tables(tables)
    _, first = np.unique(table["product_id"].to_numpy(zero_copy_only=False), return_index=True)
    if len(first) < table.num_rows:
        table = table.take(np.sort(first))
    return table, manifest


def skipped_rows(manifest: dict) -> int:
    """Rows in the parts :func:`read_store` skipped (parts of unknown size count 0; see
    ``manifest["skipped"]``)."""
    return sum(s["rows"] or 0 for s in manifest.get("skipped", []))


def feature_matrix(table: pa.Table, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """``(float32 [N, D], present bool [N])`` for ``feature``: present where ``status_<f>`` is
    ``ok`` and the vector is finite; absent rows are zeros.

    Raises:
        KeyError: ``status_<feature>`` was not read (the status is the validity signal).
    """
    if f"status_{feature}" not in table.column_names:
        raise KeyError(f"read status_{feature} with emb_{feature}: the status says which vectors exist")
    column = table[f"emb_{feature}"].combine_chunks()
    dim = column.type.list_size
    out = np.zeros((len(column), dim), dtype=np.float32)
    valid = column.is_valid().to_numpy(zero_copy_only=False)   # always all True in format 2
    if valid.any():
        out[valid] = column.filter(pa.array(valid)).flatten().to_numpy(
            zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    status = table[f"status_{feature}"].to_numpy(zero_copy_only=False)
    present = (status == "ok") & valid & np.isfinite(out).all(axis=1)
    out[~present] = 0.0
    return out, present


def prepare_store(store: str, manifest: dict, overwrite: bool = False,
                  skip_unreadable: bool = False) -> tuple[pa.Array, dict]:
    """Create or check the store; returns ``(product ids already embedded (to skip), the
    read's manifest with its "skipped" parts)``.

    Raises:
        StoreMismatch: an existing store made with other encoders (unless ``overwrite``).
        StoreFormatError: an existing store in an older format (unless ``overwrite``).
        UnreadableStorePart: a part that cannot be read (unless ``skip_unreadable``: its
            products are then embedded again).
    """
    existing = read_manifest(store)
    if existing is not None and overwrite:
        fs, path = storage.filesystem(store)
        fs.delete_dir_contents(path)
        existing = None
    if existing is None:
        storage.write_text(storage.join(store, MANIFEST), json.dumps(manifest, indent=2))
        return pa.array([], pa.string()), dict(manifest, skipped=[])
    check_compatible(existing, manifest, f"the store at {store}")
    if existing.get("version", 1) < STORE_VERSION:
        raise StoreFormatError(
            f"the store at {store} is in format {existing.get('version', 1)}; this version of "
            f"prodcat writes format {STORE_VERSION}. Convert it first with "
            f"`{upgrade_command(store)}` (or pass --overwrite to embed everything again)")
    _remove_temp_files(store)
    table, found = read_store(store, columns=["product_id"], skip_unreadable=skip_unreadable)
    return table["product_id"].combine_chunks(), found


def upgrade_store(store: str, log: Callable[[str], None] = print) -> dict:
    """Rewrite every version-1 part of the store as format :data:`STORE_VERSION` (same file name,
    atomic replace), then the manifest. Rerunnable: an interrupted upgrade resumes.

    Returns:
        ``{"store", "parts", "upgraded", "rows", "already_current"}``.

    Raises:
        FileNotFoundError: no store at ``store``. StoreFormatError / UnreadableStorePart: a part
        that this pyarrow cannot read (nothing is deleted).
    """
    import pyarrow.parquet as pq

    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no embedding store at {store} (no {MANIFEST})")
    parts, upgraded, rows = list_parts(store), 0, 0
    for uri in parts:
        fs, path = storage.filesystem(uri)
        with fs.open_input_file(path) as f:
            meta = pq.read_schema(f).metadata or {}
        if json.loads(meta.get(PARQUET_KEY, b"{}")).get("version", 1) >= STORE_VERSION:
            continue
        schema = store_schema(manifest)
        table = read_part(uri, manifest, store=store)
        table = pa.Table.from_arrays([table[name].combine_chunks() for name in schema.names],
                                     schema=schema)
        storage.write_table_atomic(table, uri)
        upgraded, rows = upgraded + 1, rows + table.num_rows
        log(f"[embed] upgraded {uri} ({table.num_rows:,} rows) to store format {STORE_VERSION}")
    if manifest.get("version", 1) < STORE_VERSION:
        manifest["version"] = STORE_VERSION
        storage.write_text(storage.join(store, MANIFEST), json.dumps(manifest, indent=2))
    return {"store": store, "parts": len(parts), "upgraded": upgraded, "rows": rows,
            "already_current": len(parts) - upgraded}


def _remove_temp_files(store: str) -> None:
    import pyarrow.fs as pafs

    if storage.is_remote(store):
        return
    fs, path = storage.filesystem(store)
    for info in fs.get_file_info(pafs.FileSelector(path)):
        if info.base_name.startswith(".tmp-part-"):
            fs.delete_file(info.path)
