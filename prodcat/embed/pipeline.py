"""The embedding pipeline on Ray Data: ``prodcat embed``.

    product table ─► decode + resize images (CPU tasks) ─► one actor pool per encoder
                  ─► part files of the embedding store (Parquet) ─► summary

Letters: N products, B batch, D_f dimension of feature f, S image input size (px).

The store it writes is :mod:`prodcat.embed.store` (an interrupted run leaves only whole parts; a
rerun embeds the products not yet in the store and refuses a store made with other weights); the
per-batch code in the actors is :class:`prodcat.embed.extractor.FeatureExtractor`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Callable

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from prodcat.core import storage
from prodcat.core.config import StrictModel
from prodcat.core.console import Progress, say
from prodcat.core.runtime import ensure_ray
from prodcat.core.telemetry import inc, set_gauge
from prodcat.embed.encoders import EncoderConfig
from prodcat.embed.encoders.base import IMAGE_STATUS, pixel_column
from prodcat.embed.extractor import FeatureExtractor, decode_images
from prodcat.embed.imaging import ImageLimits
from prodcat.embed.store import make_manifest, prepare_store, to_store_table, write_part

INPUT_COLUMNS = ["product_id", "title", "description", "image_uri"]


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


def _decode_stage(batch: dict, sizes: list[int], limits: ImageLimits) -> dict:
    """Ray Data task: add decoded images to the batch, drop ``image_uri``."""
    batch = dict(batch)
    batch.update(decode_images(batch, sizes, limits))
    batch.pop("image_uri", None)
    return batch


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


def run_embedding(config: EmbedConfig, overwrite: bool = False,
                  log: Callable[[str], None] = say, log_every_s: float = 5.0) -> dict:
    """Embed the products not yet in the store; returns the run summary (also written to
    ``<store>/summary-<run>.json``).

    Raises:
        StoreMismatch: the store holds vectors from other encoders (and not ``overwrite``).
        ValueError: ``products`` or ``output`` not set.
    """

    if not config.products or not config.output:
        raise ValueError("set products (the product table) and output (the store folder)")
    start = time.perf_counter()
    described = describe_encoders(config)
    manifest = make_manifest(described)
    done = prepare_store(config.output, manifest, overwrite)
    products, total = load_products(config.products, done, config.limit)
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    log(f"[embed] {total:,} products, {len(done):,} already in the store, {products.num_rows:,} to "
        f"embed this run ({run_id}); features: "
        + ", ".join(f"{f} ({d['encoder']}, {d['dim']}-d)" for f, d in described.items()))
    ensure_ray()
    ds_start = time.perf_counter()
    rows = []
    if products.num_rows:
        ds = build_dataset(products, config, described, config.output, run_id, manifest)
        progress = Progress("embed", products.num_rows, "products", every_s=log_every_s, log=log)
        for row in ds.iter_rows():
            rows.append(row)
            progress.advance(int(row["rows"]))
            record_part(row, run_id, sum(int(r["rows"]) for r in rows) / products.num_rows)
    summary = summarize(rows, config, described, run_id, len(done), total,
                        pipeline_s=time.perf_counter() - ds_start, wall_s=time.perf_counter() - start)
    storage.write_text(storage.join(config.output, f"summary-{run_id}.json"),
                       json.dumps(summary, indent=2))
    failures = "; ".join(f"{f}: " + ", ".join(f"{n} {reason}" for reason, n in c.items())
                         for f, c in summary["failures"].items() if c) or "none"
    log(f"[embed] {summary['embedded']:,} products in {summary['pipeline_s']:.0f} s "
        f"({summary['products_per_s']} products/s); not encoded: {failures} → {config.output}")
    return summary


def record_part(row: dict, run_id: str, share_done: float) -> None:
    """Prometheus metrics (:mod:`prodcat.core.telemetry`) of one written part: products, the
    modalities not encoded by feature and reason, and the run's progress."""
    inc("prodcat_embed_products", int(row["rows"]))
    for feature, counts in json.loads(row["statuses"]).items():
        for status, count in counts.items():
            if status != "ok":
                inc("prodcat_embed_failures", count, feature=feature, reason=status)
    set_gauge("prodcat_embed_progress", share_done, run=run_id)


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
