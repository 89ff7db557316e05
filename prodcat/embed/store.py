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

Adding an encoder to an existing store: a part holds the features of the encoders of the run that
wrote it, so a store can hold parts of different feature sets (e.g. ``text``/``image`` parts from
the first run, ``ft_text`` parts from a later run that added a fine-tuned encoder). The manifest
names every feature; each part's metadata names its own (a subset, with the same fingerprints).
:func:`prepare_store` merges new features into the manifest (a feature already there with another
fingerprint is refused); :func:`embedded_ids` says which products each feature holds; the reader
joins the features a caller asks for by ``product_id``, and a row is returned for a product when
every asked feature has a vector (or a recorded failure) for it, the same "partial store"
semantics as a run that has not finished. Parts are never rewritten: nothing already stored is
touched by adding a feature. A part's name follows from its rows (:func:`part_name`), so a write
that Ray runs again after a node failure replaces the part instead of duplicating its products.

What a fine-tuned encoder learnt: an encoder folder written by ``prodcat finetune`` holds
:data:`ENCODER_TRAINED_ON` (the product ids whose labels it was trained on); a run that adds its
feature copies that list into the store, ``trained_on/<feature>.parquet`` (a path relative to the
store, so a copied or moved store keeps it), and :func:`read_trained_on` gives it to the readers:
a decision-level model never scores a component on products its encoder learnt when it chooses
(:func:`prodcat.train.decision.heldout_sets`), and an evaluation refuses a fold whose test
platform it learnt from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodcat.core import storage
from prodcat.core.errors import DataError, UnreadableFile

STORE_VERSION = 2


MANIFEST = "manifest.json"


PARQUET_KEY = b"prodcat"

#: in an encoder folder: the product ids (column ``product_id``) a fine-tuned encoder was trained on
ENCODER_TRAINED_ON = "trained_on.parquet"
#: in a store: ``trained_on/<feature>.parquet``, the same list per feature
TRAINED_ON_DIR = "trained_on"

#: the pyarrow release that first reads version-1 parts (null fixed-size-list entries) back
V1_READABLE_FROM = 26


class StoreMismatch(DataError, ValueError):
    """An embedding store made with other encoders (fingerprints) than the ones asked for (a
    :class:`~prodcat.core.errors.DataError`: the CLI prints its message, which says what to do,
    and exits with status 2, without a traceback)."""


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
def trained_on_uri(store: str, feature: str) -> str:
    """Where the store keeps the product ids ``feature``'s encoder was trained on."""
    return storage.join(store, TRAINED_ON_DIR, f"{feature}.parquet")


def encoder_trained_on(weights: str) -> str | None:
    """The :data:`ENCODER_TRAINED_ON` file of an encoder folder (local or ``s3://``), or None
    when ``weights`` is a hub id, a ``shared:`` model or a folder without one (an encoder that
    was not fine-tuned by prodcat)."""
    if not weights or weights.startswith("shared:"):
        return None
    uri = storage.join(weights, ENCODER_TRAINED_ON)
    try:
        return uri if storage.exists(uri) else None
    except (OSError, ValueError):      # a hub id is no path
        return None


def record_trained_on(store: str, features: dict[str, str]) -> dict[str, int]:
    """Copy each encoder's :data:`ENCODER_TRAINED_ON` list into the store
    (``{feature: encoder folder}``; :func:`trained_on_uri`); returns ``{feature: products}``
    for the features whose encoder has one (an existing copy is replaced: the feature's
    fingerprint already ties it to these weights)."""
    out = {}
    for feature, weights in features.items():
        source = encoder_trained_on(weights)
        if source is None:
            continue
        ids = storage.read_table(source, columns=["product_id"])
        storage.write_table(ids, trained_on_uri(store, feature))
        out[feature] = ids.num_rows
    return out


def read_trained_on(store: str, features: list[str]) -> dict[str, np.ndarray]:
    """``{feature: product ids (str) [N_f]}`` for those of ``features`` whose encoder was
    fine-tuned (their list is in the store: :func:`record_trained_on`); others are absent."""
    out = {}
    for f in features:
        uri = trained_on_uri(store, f)
        if storage.exists(uri):
            out[f] = np.asarray(storage.read_table(uri)["product_id"].to_pylist(), dtype=str)
    return out


def make_manifest(features: dict[str, dict]) -> dict:
    """The store manifest for ``FeatureExtractor.describe()`` output."""
    return {"version": STORE_VERSION, "features": features}


def _signature(manifest: dict) -> dict[str, tuple]:
    return {f: (d["fingerprint"]["key"], d["dim"]) for f, d in manifest["features"].items()}


def check_part(found: dict, manifest: dict, where: str) -> None:
    """Raise :class:`StoreMismatch` unless every feature of a part (``found``, its metadata) is in
    the store's ``manifest`` with the same fingerprint and dimension (a part may hold a subset of
    the store's features: those of the run that wrote it)."""
    a, b = _signature(found), _signature(manifest)
    bad = sorted(f for f in a if b.get(f) != a[f])
    if bad:
        detail = "; ".join(f"{f}: part {a[f][0]} vs store {b.get(f, ('absent',))[0]}" for f in bad)
        raise StoreMismatch(f"{where} was made with other encoders than its store's manifest names "
                            f"({detail}); it does not belong to this store")


def merge_manifest(existing: dict, wanted: dict, where: str) -> tuple[dict, list[str]]:
    """``(merged manifest, features added)``: ``existing`` plus the features of ``wanted`` it does
    not have yet (appended in ``wanted``'s order).

    Raises:
        StoreMismatch: a feature in both with another fingerprint or dimension (its vectors would
            not be comparable); the message says to write to a new folder or pass --overwrite.
    """
    a, b = _signature(existing), _signature(wanted)
    clash = sorted(f for f in b if f in a and a[f] != b[f])
    if clash:
        detail = "; ".join(f"{f}: store {a[f][0]} vs config {b[f][0]}" for f in clash)
        raise StoreMismatch(f"{where} was made with other encoders ({detail}). Write to a new "
                            "output folder, give the new encoder another feature_prefix to add it "
                            "beside the stored one, or pass --overwrite to replace the store.")
    added = [f for f in b if f not in a]
    merged = dict(existing, features={**existing["features"],
                                      **{f: wanted["features"][f] for f in added}})
    return merged, added


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


def part_name(table: pa.Table, run_id: str) -> str:
    """``part-<run_id>-<digest>.parquet``: the digest (16 hex digits of a SHA-256) of the
    features the part holds and of its sorted product ids, so the name follows from the rows.

    A Ray task that is run again (its node died after it wrote the part, or its output was lost
    and rebuilt from lineage) writes the same rows under the same name: the part is replaced, not
    added beside itself, and no product is stored twice."""
    features = sorted(n[len("emb_"):] for n in table.column_names if n.startswith("emb_"))
    ids = sorted(str(i) for i in table["product_id"].to_pylist())
    digest = hashlib.sha256("\n".join(["+".join(features), *ids]).encode()).hexdigest()[:16]
    return f"part-{run_id}-{digest}.parquet"


def write_part(table: pa.Table, store: str, run_id: str) -> str:
    """Write one part file atomically (local: temp name then rename; S3: one PUT) under its
    :func:`part_name` (idempotent: the same rows again replace the same file). Returns its name."""
    name = part_name(table, run_id)
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


def part_manifest(uri: str) -> dict:
    """The manifest a part carries in its metadata (its features, their fingerprints, format).

    Raises:
        UnreadableStorePart: the footer cannot be read. StoreMismatch: no prodcat metadata.
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
    return json.loads(meta[PARQUET_KEY])


def read_part(uri: str, manifest: dict, columns: list[str] | None = None,
              store: str | None = None, found: dict | None = None) -> pa.Table:
    """One part in format 2 (a version-1 part is converted in memory), checked against the
    store's manifest (the part may hold a subset of its features); ``found``: the part's own
    manifest when already read (:func:`part_manifest`).

    Raises:
        StoreMismatch: the part has no prodcat metadata or other encoders.
        StoreFormatError: a version-1 part this pyarrow cannot read (the message says how to
            convert the store).
        UnreadableStorePart: any other file that cannot be read.
    """
    import pyarrow.parquet as pq

    found = found if found is not None else part_manifest(uri)
    check_part(found, manifest, uri)
    fs, path = storage.filesystem(uri)
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


def _scan(store: str, manifest: dict, skip_unreadable: bool) -> tuple[list[tuple[str, dict]], list[dict]]:
    """``([(part uri, its manifest)], skipped)``: every part's metadata, checked against the store's
    ``manifest``; unreadable footers are skipped (listed) with ``skip_unreadable``, else raised."""
    parts, skipped = [], []
    for uri in list_parts(store):
        try:
            found = part_manifest(uri)
        except UnreadableStorePart as err:
            if not skip_unreadable:
                raise
            skipped.append({"file": uri, "rows": part_rows(uri), "error": str(err.args[0])})
            continue
        check_part(found, manifest, uri)
        parts.append((uri, found))
    return parts, skipped


def _feature_columns(feature: str) -> tuple[str, str]:
    return f"emb_{feature}", f"status_{feature}"


def _requested(columns: list[str] | None, manifest: dict) -> list[str]:
    """The features ``columns`` asks for, in manifest order; every feature when it names none
    (``None`` or only ``product_id``).

    Raises:
        KeyError: a column of a feature the store does not have (lists the ones it has).
    """
    features = list(manifest["features"])
    if columns is None:
        return features
    asked = {c.split("_", 1)[1] for c in columns if c.startswith(("emb_", "status_"))}
    unknown = sorted(asked - set(features))
    if unknown:
        raise KeyError(f"features {unknown} are not in the embedding store; it has {sorted(features)}")
    return [f for f in features if f in asked] or features


def _first_rows(table: pa.Table) -> pa.Table:
    """``table`` with each ``product_id`` kept once (its first row)."""
    _, first = np.unique(table["product_id"].to_numpy(zero_copy_only=False), return_index=True)
    return table.take(np.sort(first)) if len(first) < table.num_rows else table


def _read_parts(parts: list[tuple[str, dict]], manifest: dict, columns: list[str] | None,
                features: list[str], store: str, skip_unreadable: bool,
                skipped: list[dict]) -> dict[str, list[pa.Table]]:
    """Per requested feature, the tables (``product_id`` + its asked columns) of the parts that
    hold it; each part is read once."""
    by_feature: dict[str, list[pa.Table]] = {f: [] for f in features}
    for uri, found in parts:
        mine = [f for f in features if f in found["features"]]
        if not mine:
            continue
        wanted = ["product_id"] + [c for f in mine for c in _feature_columns(f)
                                   if columns is None or c in columns]
        try:
            table = read_part(uri, manifest, wanted, store, found)
        except UnreadableStorePart as err:
            if not skip_unreadable:
                raise
            skipped.append({"file": uri, "rows": part_rows(uri), "error": str(err.args[0])})
            continue
        for f in mine:
            by_feature[f].append(table.select(
                ["product_id"] + [c for c in _feature_columns(f) if c in wanted]))
    return by_feature


def read_store(store: str, columns: list[str] | None = None,
               skip_unreadable: bool = False) -> tuple[pa.Table, dict]:
    """``(table, manifest)`` of an embedding store; a product embedded twice is kept once.

    The table holds ``product_id`` and the asked columns (all columns when ``columns`` is None):
    one row per product that has every asked feature (all the store's features when ``columns``
    names none), in the order the first asked feature's parts hold them. A store whose parts all
    hold the same features is read as it is; one with added features joins them by
    ``product_id`` (module docstring).

    Every vector column comes back without nulls (a version-1 store is converted in memory where
    this pyarrow reads it). With ``skip_unreadable``, parts that cannot be read are left out and
    listed in ``manifest["skipped"]`` (``{"file", "rows" (from the footer, None if unknown),
    "error"}``); the list is empty otherwise.

    Raises:
        FileNotFoundError: no manifest at ``store``.
        KeyError: a column of a feature the store does not have.
        StoreMismatch: a part made with other encoders than the manifest names.
        StoreFormatError: a version-1 part that this pyarrow cannot read.
        UnreadableStorePart: a part that cannot be read (unless ``skip_unreadable``).
    """
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no embedding store at {store} (no {MANIFEST})")
    features = _requested(columns, manifest)
    parts, skipped = _scan(store, manifest, skip_unreadable)
    schema = store_schema(manifest)
    names = columns or schema.names
    if all(set(features) <= set(found["features"]) for _, found in parts):
        tables = []                          # every part holds every asked feature: one table
        for uri, found in parts:
            try:
                tables.append(read_part(uri, manifest, names, store, found))
            except UnreadableStorePart as err:
                if not skip_unreadable:
                    raise
                skipped.append({"file": uri, "rows": part_rows(uri), "error": str(err.args[0])})
        manifest = dict(manifest, skipped=skipped)
        if not tables:
            return schema.empty_table().select(names), manifest
        return _first_rows(pa.concat_tables(tables)), manifest
    by_feature = _read_parts(parts, manifest, columns, features, store, skip_unreadable, skipped)
    manifest = dict(manifest, skipped=skipped)
    if any(not tables for tables in by_feature.values()):
        return schema.empty_table().select(names), manifest
    merged = {f: _first_rows(pa.concat_tables(tables)) for f, tables in by_feature.items()}
    ids = merged[features[0]]["product_id"]
    for f in features[1:]:
        ids = ids.filter(pc.is_in(ids, value_set=merged[f]["product_id"]))
    out = {"product_id": ids}
    for f in features:
        rows = merged[f].take(pc.index_in(ids, value_set=merged[f]["product_id"]))
        out.update({c: rows[c] for c in rows.column_names if c != "product_id"})
    fields = [schema.field(n) for n in names]
    return pa.table([out[n] for n in names], schema=pa.schema(fields, metadata=schema.metadata)), manifest


def embedded_ids(store: str, features: list[str] | None = None,
                 skip_unreadable: bool = False) -> tuple[dict[str, pa.Array], list[dict]]:
    """``({feature: product ids it holds (each once)}, skipped parts)`` for ``features`` (default
    all the store's): what a rerun or an added encoder still has to embed.

    Raises:
        FileNotFoundError: no store at ``store``; as :func:`read_store` otherwise.
    """
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no embedding store at {store} (no {MANIFEST})")
    features = list(manifest["features"]) if features is None else list(features)
    parts, skipped = _scan(store, manifest, skip_unreadable)
    by_feature = _read_parts(parts, manifest, ["product_id"], features, store, skip_unreadable,
                             skipped)
    out = {}
    for f, tables in by_feature.items():
        ids = (pa.concat_tables(tables)["product_id"].combine_chunks() if tables
               else pa.array([], pa.string()))
        out[f] = pa.array(np.unique(ids.to_numpy(zero_copy_only=False)).tolist(), pa.string()) \
            if len(ids) else ids
    return out, skipped


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


def read_vectors(store: str, feature: str, product_ids=None, skip_unreadable: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(product ids [N] (str), vectors float32 [N, D], present bool [N])`` of one feature: every
    product the store holds it for, or exactly ``product_ids`` in their order (a product the
    store lacks gets a zero vector and ``present`` False, as does a recorded failure).

    Raises:
        FileNotFoundError: no store at ``store``. KeyError: ``feature`` not in the store.
    """
    table, _ = read_store(store, ["product_id", f"emb_{feature}", f"status_{feature}"],
                          skip_unreadable)
    x, present = feature_matrix(table, feature)
    ids = table["product_id"].to_numpy(zero_copy_only=False)
    if product_ids is None:
        return ids.astype(str), x, present
    wanted = pa.array([str(p) for p in product_ids], pa.string())
    index = pc.index_in(wanted, value_set=table["product_id"]).to_numpy(zero_copy_only=False)
    found = ~np.isnan(index.astype(float))
    rows = np.where(found, np.nan_to_num(index.astype(float)), 0).astype(np.int64)
    out = np.zeros((len(wanted), x.shape[1]), np.float32)
    out[found] = x[rows[found]]
    return np.asarray(wanted.to_pylist(), dtype=str), out, found & present[rows] if len(x) else found


def prepare_store(store: str, manifest: dict, overwrite: bool = False,
                  skip_unreadable: bool = False) -> tuple[pa.Array, dict]:
    """Create or check the store, adding ``manifest``'s features it does not hold yet to its
    manifest (an encoder added to an existing store); returns ``(product ids that already have
    every feature of ``manifest`` (to skip), the read's manifest with its "skipped" parts)``.

    Raises:
        StoreMismatch: a feature the store holds with another fingerprint (unless ``overwrite``).
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
    merged, added = merge_manifest(existing, manifest, f"the store at {store}")
    if existing.get("version", 1) < STORE_VERSION:
        raise StoreFormatError(
            f"the store at {store} is in format {existing.get('version', 1)}; this version of "
            f"prodcat writes format {STORE_VERSION}. Convert it first with "
            f"`{upgrade_command(store)}` (or pass --overwrite to embed everything again)")
    if added:        # before any part of the new features is written: readers accept them
        storage.write_text(storage.join(store, MANIFEST), json.dumps(merged, indent=2))
    _remove_temp_files(store)
    table, found = read_store(store, columns=["product_id"] + [
        f"status_{f}" for f in manifest["features"]], skip_unreadable=skip_unreadable)
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
        found = part_manifest(uri)
        schema = store_schema(dict(manifest, features={
            f: manifest["features"][f] for f in found["features"]}))
        table = read_part(uri, manifest, store=store, found=found)
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
