"""The embedding pipeline (Ray Data) and the embedding store it writes.

    product table ─► decode + resize images (CPU tasks) ─► one actor pool per encoder
                  ─► part files of the embedding store (Parquet) ─► summary

Letters: N products, B batch, D_f dimension of feature f, S image input size (px).

Store layout (docs/contracts.md): ``<store>/manifest.json`` and ``<store>/part-<run>-<id>.parquet``
with ``product_id``, per feature ``emb_<f>`` (``fixed_size_list<float32>[D_f]``, null when that
modality failed or is absent) and ``status_<f>`` (``ok`` or the reason). Each part carries the
manifest under the Parquet metadata key ``prodcat``. Parts appear atomically, so an interrupted run
leaves only whole parts behind; a rerun embeds the products not yet in the store, and refuses a
store whose encoder fingerprints differ from the config's (vectors from different weights are never
mixed).

:class:`FeatureExtractor` is the per-batch code: the same object runs in the Ray Data actors and in
Serve replicas (no Ray needed).
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from prodcat import storage
from prodcat.config import StrictModel
from prodcat.encoders import EncoderConfig, build_encoder
from prodcat.encoders.base import IMAGE_STATUS, pixel_column
from prodcat.imaging import ImageLimits, decode_batch

STORE_VERSION = 1
MANIFEST = "manifest.json"
PARQUET_KEY = b"prodcat"
INPUT_COLUMNS = ["product_id", "title", "description", "image_uri"]


class StoreMismatch(ValueError):
    """An embedding store made with other encoders (fingerprints) than the ones asked for."""


class EmbedConfig(StrictModel):
    """``prodcat embed``: which encoders, and how the pipeline runs."""

    products: str | None = Field(None, description="product table: Parquet file or folder, local or s3://")
    output: str | None = Field(None, description="embedding store folder, local or s3://")
    encoders: dict[str, EncoderConfig] = Field(description="encoder name → encoder config")
    image_limits: ImageLimits = Field(default_factory=ImageLimits, description="decode limits")
    decode_batch_size: int = Field(64, gt=0, description="images per decode task batch")
    decode_num_cpus: float = Field(0.25, gt=0, description="logical CPUs per decode task")
    block_rows: int = Field(1024, gt=0, description="products per input block")
    write_rows: int = Field(4096, gt=0, description="products per store part file (at most)")
    cache_dir: str | None = Field(None, description="local cache for s3:// weights "
                                  "(default $PRODCAT_CACHE_DIR or ~/.cache/prodcat/weights)")
    limit: int | None = Field(None, gt=0, description="embed at most this many new products this run")

    @model_validator(mode="after")
    def _features_unique(self) -> "EmbedConfig":
        if not self.encoders:
            raise ValueError("encoders is empty: name at least one encoder")
        seen: dict[str, str] = {}
        for name, enc in self.encoders.items():
            for feature in enc.feature_names():
                if feature in seen:
                    raise ValueError(f"encoders {seen[feature]!r} and {name!r} both make feature "
                                     f"{feature!r}; set feature_prefix on one of them")
                seen[feature] = name
        return self


# -- the per-batch code: Ray Data actors and Serve replicas ---------------------------------------
class FeatureExtractor:
    """Encoders applied to a batch of products.

    ``FeatureExtractor(encoders)(batch)``: ``batch`` holds equal-length columns ``product_id``,
    ``title``, ``description`` and either ``image_uri`` (path / ``s3://`` / None), ``image_bytes``
    (encoded bytes / None) or already decoded ``_pixels_<S>`` (``uint8 [B, S, S, 3]``) with
    ``_image_status``. Returns ``product_id`` plus per feature ``emb_<f>`` (float32 ``[B, D_f]``,
    zeros where ``status_<f>`` is not ``ok``) and ``status_<f>``.

    Args:
        encoders: encoder name → config.
        expected: encoder name → fingerprint key the caller expects.
        keep_inputs: also return the input columns and ``_seconds_<encoder>`` (pipeline use).
        drop_columns: columns removed from the output (pipeline use).
        num_threads: ``torch.set_num_threads`` for this process (actors), None leaves it.

    Raises:
        StoreMismatch: when a loaded encoder's fingerprint differs from ``expected``.
    """

    def __init__(self, encoders: Mapping[str, EncoderConfig], image_limits: ImageLimits | None = None,
                 cache_dir: str | None = None, expected: Mapping[str, str] | None = None,
                 keep_inputs: bool = False, drop_columns: tuple[str, ...] = (),
                 num_threads: int | None = None) -> None:
        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        self.image_limits = image_limits or ImageLimits()
        self.encoders = {name: build_encoder(cfg, cache_dir) for name, cfg in encoders.items()}
        for name, key in (expected or {}).items():
            found = self.encoders[name].fingerprint.key
            if found != key:
                raise StoreMismatch(f"encoder {name!r} loaded weights with fingerprint {found}, "
                                    f"expected {key}: its weights changed during the run")
        self.keep_inputs, self.drop_columns = keep_inputs, tuple(drop_columns)

    @property
    def image_sizes(self) -> list[int]:
        """Input sizes S of the encoders that read images."""
        return sorted({e.image_size for e in self.encoders.values() if e.image_size})

    def describe(self) -> dict[str, dict]:
        """Feature name → ``{encoder, family, modality, dim, fingerprint, config}`` (manifest)."""
        out = {}
        for name, enc in self.encoders.items():
            for feature, modality in enc.features.items():
                out[feature] = {"encoder": name, "family": enc.family, "modality": modality,
                                "dim": enc.dim, "image_size": enc.image_size,
                                "fingerprint": enc.fingerprint.to_dict(),
                                "config": enc.config.model_dump(mode="json")}
        return out

    def __call__(self, batch: Mapping) -> dict:
        batch = dict(batch)
        n = len(batch["product_id"])
        missing = [s for s in self.image_sizes if pixel_column(s) not in batch]
        if missing:
            batch.update(decode_images(batch, missing, self.image_limits))
        out = dict(batch) if self.keep_inputs else {"product_id": batch["product_id"]}
        for name, enc in self.encoders.items():
            start = time.perf_counter()
            out.update(enc.encode(batch))
            if self.keep_inputs:
                out[f"_seconds_{name}"] = np.full(n, (time.perf_counter() - start) / max(n, 1))
        for column in self.drop_columns:
            out.pop(column, None)
        return out


def decode_images(batch: Mapping, sizes: list[int], limits: ImageLimits | None = None) -> dict:
    """``_pixels_<S>`` (``uint8 [B, S, S, 3]``) for each S and ``_image_status`` from the batch's
    ``image_bytes`` or ``image_uri`` column; a bad image gets its reason, never an exception."""
    sources = batch.get("image_bytes", batch.get("image_uri"))
    if sources is None:
        sources = [None] * len(batch["product_id"])
    pixels, statuses = decode_batch(list(sources), sizes, limits)
    out = {pixel_column(s): arr for s, arr in pixels.items()}
    out[IMAGE_STATUS] = np.array(statuses, dtype=object)
    return out


def _decode_stage(batch: dict, sizes: list[int], limits: ImageLimits) -> dict:
    """Ray Data task: add decoded images to the batch, drop ``image_uri``."""
    batch = dict(batch)
    batch.update(decode_images(batch, sizes, limits))
    batch.pop("image_uri", None)
    return batch


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
    if storage.is_remote(store):
        storage.write_table(table, storage.join(store, name))
        return name
    fs, path = storage.filesystem(storage.join(store, f".tmp-{name}"))
    storage.write_table(table, path)
    fs.move(path, storage.filesystem(storage.join(store, name))[1])
    return name


def list_parts(store: str) -> list[str]:
    """URIs of the store's part files, sorted (temporary files excluded)."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(store)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File
                   and i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))
    return [storage.join(store, n) for n in names]


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


# -- the pipeline ----------------------------------------------------------------------------------
def _write_stage(batch: dict, store: str, run_id: str, manifest: dict, encoders: list[str]) -> dict:
    """Ray Data task: write one part; returns one summary row (rows, seconds, status counts)."""
    table = to_store_table(batch, manifest)
    name = write_part(table, store, run_id)
    counts = {f: dict(zip(*np.unique(np.asarray(batch[f"status_{f}"], dtype=str),
                                     return_counts=True))) for f in manifest["features"]}
    counts = {f: {k: int(v) for k, v in c.items()} for f, c in counts.items()}
    row = {"file": [name], "rows": [table.num_rows], "statuses": [json.dumps(counts)]}
    for enc in encoders:
        row[f"seconds_{enc}"] = [float(np.sum(batch[f"_seconds_{enc}"]))]
    return row


def load_products(uri: str, done: pa.Array, limit: int | None) -> tuple[pa.Table, int]:
    """The product rows still to embed (nulls in text and image columns made empty strings),
    and the table's total row count."""
    import pyarrow.compute as pc

    table = storage.read_table(uri, columns=INPUT_COLUMNS)
    total = table.num_rows
    if len(done):
        table = table.filter(pc.invert(pc.is_in(table["product_id"], value_set=done)))
    if limit is not None:
        table = table.slice(0, limit)
    for name in ("title", "description", "image_uri"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.fill_null(table[name].cast(pa.string()), ""))
    return table, total


def build_dataset(products: pa.Table, config: EmbedConfig, described: dict, store: str,
                  run_id: str, manifest: dict):
    """The Ray Data pipeline over ``products`` (not executed yet)."""
    import ray

    blocks = [products.slice(i, config.block_rows)
              for i in range(0, products.num_rows, config.block_rows)]
    ds = ray.data.from_arrow(blocks)
    sizes = sorted({d["image_size"] for d in described.values() if d["image_size"]})
    if sizes:
        ds = ds.map_batches(_decode_stage, fn_kwargs={"sizes": sizes, "limits": config.image_limits},
                            batch_size=config.decode_batch_size, batch_format="numpy",
                            num_cpus=config.decode_num_cpus, udf_modifying_row_count=False)
    size_of = {d["encoder"]: d["image_size"] for d in described.values()}
    order = sorted(config.encoders, key=lambda name: size_of[name] is None)  # image readers first
    for i, name in enumerate(order):
        later = {size_of[m] for m in order[i + 1:]}
        drop = [pixel_column(s) for s in sizes if s not in later]
        drop += [IMAGE_STATUS] if not any(later - {None}) else []
        ds = _encoder_stage(ds, name, config, described, drop)
    return ds.map_batches(_write_stage, fn_kwargs={
        "store": store, "run_id": run_id, "manifest": manifest, "encoders": order},
        # 0 CPUs: writing is light, and a CPU share would let upstream decode tasks starve it
        batch_size=config.write_rows, batch_format="numpy", num_cpus=0)


def _encoder_stage(ds, name: str, config: EmbedConfig, described: dict, drop: list[str]):
    from ray.data import ActorPoolStrategy

    enc = config.encoders[name]
    key = next(d["fingerprint"]["key"] for d in described.values() if d["encoder"] == name)
    return ds.map_batches(
        FeatureExtractor, batch_size=enc.batch_size, batch_format="numpy",
        compute=ActorPoolStrategy(size=enc.pool_size), num_cpus=enc.num_cpus,
        num_gpus=enc.num_gpus or None, udf_modifying_row_count=False,
        fn_constructor_kwargs={
            "encoders": {name: enc}, "image_limits": config.image_limits,
            "cache_dir": config.cache_dir, "expected": {name: key}, "keep_inputs": True,
            "drop_columns": tuple(drop), "num_threads": enc.num_threads or max(1, round(enc.num_cpus))})


def describe_encoders(config: EmbedConfig) -> dict[str, dict]:
    """Load each encoder once in this process for its fingerprint, dimension and input size."""
    described = {}
    for name, enc in config.encoders.items():
        extractor = FeatureExtractor({name: enc}, cache_dir=config.cache_dir)
        described.update(extractor.describe())
        del extractor
    return described


def _log(message: str) -> None:
    print(message, flush=True)


def run_embedding(config: EmbedConfig, overwrite: bool = False,
                  log: Callable[[str], None] = _log, log_every_s: float = 30.0) -> dict:
    """Embed the products not yet in the store; returns the run summary (also written to
    ``<store>/summary-<run>.json``).

    Raises:
        StoreMismatch: the store holds vectors from other encoders (and not ``overwrite``).
        ValueError: ``products`` or ``output`` not set.
    """
    from prodcat.runtime import ensure_ray

    if not config.products or not config.output:
        raise ValueError("set products (the product table) and output (the store folder)")
    start = time.perf_counter()
    described = describe_encoders(config)
    manifest = make_manifest(described)
    done = prepare_store(config.output, manifest, overwrite)
    products, total = load_products(config.products, done, config.limit)
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    log(f"embed: {total} products, {len(done)} already in the store, {products.num_rows} to embed "
        f"this run ({run_id}); features: {', '.join(described)}")
    ensure_ray()
    ds_start = time.perf_counter()
    rows = []
    if products.num_rows:
        ds = build_dataset(products, config, described, config.output, run_id, manifest)
        last = time.perf_counter()
        for row in ds.iter_rows():
            rows.append(row)
            if time.perf_counter() - last > log_every_s:
                last = time.perf_counter()
                n = sum(r["rows"] for r in rows)
                log(f"embed: {n}/{products.num_rows} products, "
                    f"{n / (last - ds_start):.1f} products/s")
    summary = summarize(rows, config, described, run_id, len(done), total,
                        pipeline_s=time.perf_counter() - ds_start, wall_s=time.perf_counter() - start)
    storage.write_text(storage.join(config.output, f"summary-{run_id}.json"),
                       json.dumps(summary, indent=2))
    return summary


def summarize(rows: list[dict], config: EmbedConfig, described: dict, run_id: str,
              skipped: int, total: int, pipeline_s: float, wall_s: float) -> dict:
    """Run summary: products/s overall and per encoder (busy time), failures by reason."""
    n = sum(int(r["rows"]) for r in rows)
    statuses: dict[str, dict[str, int]] = {}
    for r in rows:
        for feature, counts in json.loads(r["statuses"]).items():
            for status, count in counts.items():
                statuses.setdefault(feature, {}).setdefault(status, 0)
                statuses[feature][status] += count
    encoders = {}
    for name, enc in config.encoders.items():
        busy = sum(float(r[f"seconds_{name}"]) for r in rows)
        encoders[name] = {"busy_s": round(busy, 2), "pool_size": enc.pool_size,
                          "products_per_s_per_actor": round(n / busy, 1) if busy else None}
    failures = {f: {s: c for s, c in counts.items() if s != "ok"} for f, counts in statuses.items()}
    return {"run_id": run_id, "products_total": total, "skipped_already_embedded": skipped,
            "embedded": n, "files": len(rows), "pipeline_s": round(pipeline_s, 2),
            "wall_s": round(wall_s, 2),
            "products_per_s": round(n / pipeline_s, 1) if n and pipeline_s else None,
            "encoders": encoders, "failures": failures, "statuses": statuses,
            "features": {f: {"encoder": d["encoder"], "dim": d["dim"],
                             "fingerprint": d["fingerprint"]["key"]} for f, d in described.items()}}
