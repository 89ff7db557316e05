"""The embedding store: Parquet part files plus ``manifest.json`` (``docs/contracts.md``).

A part holds ``product_id`` and, per feature ``f``, ``emb_<f>`` (``fixed_size_list<float32>
[D_f]``, null when the modality failed or is absent) and ``status_<f>`` (``ok`` or the reason).
Every part carries the manifest (encoder configs and weight fingerprints) under the Parquet
metadata key ``prodcat``, so vectors from other weights are never mixed in silently. Parts appear
atomically; a rerun embeds only the products not yet in the store.
"""

from __future__ import annotations

import json
import uuid
import warnings
from typing import Mapping

import numpy as np
import pyarrow as pa

from prodcat.core import storage

STORE_VERSION = 1


MANIFEST = "manifest.json"


PARQUET_KEY = b"prodcat"


class StoreMismatch(ValueError):
    """An embedding store made with other encoders (fingerprints) than the ones asked for."""


# -- the store -------------------------------------------------------------------------------------
def make_manifest(features: dict[str, dict]) -> dict:
    """The store manifest for ``FeatureExtractor.describe()`` output."""
    return {"version": STORE_VERSION, "features": features}


def _signature(manifest: dict) -> dict[str, tuple]:
    return {f: (d["fingerprint"]["key"], d["dim"]) for f, d in manifest["features"].items()}


def check_compatible(found: dict, wanted: dict, where: str) -> None:
    """Raise :class:`StoreMismatch` unless both manifests have the same features, fingerprints
    and dimensions (batch sizes and devices may differ)."""
    a, b = _signature(found), _signature(wanted)
    if a == b:
        return
    diff = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
    detail = "; ".join(f"{f}: store {a.get(f, ('absent',))[0]} vs config {b.get(f, ('absent',))[0]}"
                       for f in diff)
    raise StoreMismatch(f"{where} was made with other encoders ({detail}). Write to a new output "
                        "folder, or pass --overwrite to replace the store.")


def store_schema(manifest: dict) -> pa.Schema:
    """Arrow schema of a store part for ``manifest``."""
    fields = [pa.field("product_id", pa.string(), nullable=False)]
    for feature, info in manifest["features"].items():
        fields.append(pa.field(f"emb_{feature}", pa.list_(pa.float32(), info["dim"])))
        fields.append(pa.field(f"status_{feature}", pa.string(), nullable=False))
    return pa.schema(fields, metadata={PARQUET_KEY: json.dumps(manifest).encode()})


def to_store_table(batch: Mapping, manifest: dict) -> pa.Table:
    """A batch with ``emb_<f>`` ``[B, D_f]`` and ``status_<f>`` → a store table (null vectors
    where the status is not ``ok``)."""
    schema = store_schema(manifest)
    columns = [pa.array([str(p) for p in batch["product_id"]], pa.string())]
    for feature, info in manifest["features"].items():
        status = np.array([str(s) for s in batch[f"status_{feature}"]], dtype=object)
        emb = np.asarray(batch[f"emb_{feature}"], dtype=np.float32).reshape(len(status), info["dim"])
        values = pa.array(emb.reshape(-1), pa.float32())
        mask = pa.array(status != "ok", pa.bool_())
        columns.append(pa.FixedSizeListArray.from_arrays(values, info["dim"], mask=mask))
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


def _read_part(uri: str, manifest: dict, columns: list[str] | None) -> pa.Table | None:
    """One part, checked against the manifest; None (with a warning) for an unreadable file."""
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)
    try:
        meta = pq.read_schema(path, filesystem=fs).metadata or {}
        table = pq.read_table(path, filesystem=fs, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        warnings.warn(f"skipping unreadable store part {uri} ({err}); a rerun re-embeds its products")
        return None
    if PARQUET_KEY not in meta:
        raise StoreMismatch(f"{uri} has no prodcat metadata: not a part of this store")
    check_compatible(json.loads(meta[PARQUET_KEY]), manifest, uri)
    return table


def read_store(store: str, columns: list[str] | None = None) -> tuple[pa.Table, dict]:
    """``(table, manifest)`` of an embedding store; a product embedded twice is kept once.

    Raises:
        FileNotFoundError: no manifest at ``store``.
        StoreMismatch: a part made with other encoders than the manifest names.
    """
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no embedding store at {store} (no {MANIFEST})")
    tables = [t for t in (_read_part(u, manifest, columns) for u in list_parts(store)) if t is not None]
    if not tables:
        empty = store_schema(manifest).empty_table()
        return empty.select(columns or empty.column_names), manifest
    table = pa.concat_tables(tables)
    _, first = np.unique(table["product_id"].to_numpy(zero_copy_only=False), return_index=True)
    if len(first) < table.num_rows:
        table = table.take(np.sort(first))
    return table, manifest


def feature_matrix(table: pa.Table, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """``(float32 [N, D], present bool [N])`` for ``feature``; absent rows are zeros."""
    column = table[f"emb_{feature}"].combine_chunks()
    present = column.is_valid().to_numpy(zero_copy_only=False)
    dim = column.type.list_size
    values = column.flatten().to_numpy().astype(np.float32)
    out = np.zeros((len(column), dim), dtype=np.float32)
    out[present] = values.reshape(-1, dim)
    return out, present


def prepare_store(store: str, manifest: dict, overwrite: bool = False) -> pa.Array:
    """Create or check the store; returns the product ids already embedded (to skip).

    Raises:
        StoreMismatch: an existing store made with other encoders (unless ``overwrite``).
    """
    existing = read_manifest(store)
    if existing is not None and overwrite:
        fs, path = storage.filesystem(store)
        fs.delete_dir_contents(path)
        existing = None
    if existing is None:
        storage.write_text(storage.join(store, MANIFEST), json.dumps(manifest, indent=2))
        return pa.array([], pa.string())
    check_compatible(existing, manifest, f"the store at {store}")
    _remove_temp_files(store)
    table, _ = read_store(store, columns=["product_id"])
    return table["product_id"].combine_chunks()


def _remove_temp_files(store: str) -> None:
    import pyarrow.fs as pafs

    if storage.is_remote(store):
        return
    fs, path = storage.filesystem(store)
    for info in fs.get_file_info(pafs.FileSelector(path)):
        if info.base_name.startswith(".tmp-part-"):
            fs.delete_file(info.path)
