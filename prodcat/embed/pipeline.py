"""The embedding pipeline on Ray Data: ``prodcat embed``.

    product table ─► tokenize, sort rows by token count;                CPU tasks
                     decode, resize, normalise images (+ CLIP tokens)
                  ─► image and joint encoders, then text encoders      one actor pool each
                  ─► part files of the embedding store (Parquet) ─► summary

Letters: N products, B batch, D_f dimension of feature f, S image input size (px).

Everything but the forward runs in CPU tasks (each encoder's ``inputs``,
:mod:`prodcat.embed.encoders.inputs`), so encoder actors only copy tensors to their device and
run the model; rows sorted by token count within ``tokenize_batch_size`` products make the text
encoders' batches carry little padding. Pools and GPU fractions: :mod:`prodcat.embed.pools`.

The store it writes is :mod:`prodcat.embed.store` (an interrupted run leaves only whole parts; a
rerun embeds the products not yet in the store and refuses a feature the store holds with other
weights); the per-batch code in the actors is :class:`prodcat.embed.extractor.FeatureExtractor`.

Adding an encoder to an existing store: a config whose encoders make features the store does not
hold yet (e.g. a fine-tuned text encoder with ``feature_prefix: ft_``) adds them to the store's
manifest and embeds, for them only, every product of the table (the stored features are left as
they are; the encoders whose features are complete are not run). Encoders are grouped by the
products they still lack, and each group writes parts of its own features.

From Python, e.g. per evaluation fold (``product_ids``: a subset of the table's rows)::

    from prodcat.embed import EmbedConfig, read_vectors, run_embedding
    from prodcat.embed.encoders import TextEncoderConfig
    cfg = EmbedConfig(products="runs/x/catalog/products.parquet", output="runs/x/emb_fold",
                      encoders={"text_ft": TextEncoderConfig(weights="runs/ft/encoder",
                                                              feature_prefix="ft_", max_tokens=64)})
    run_embedding(cfg, product_ids=ids)                  # resumable; adds to an existing store
    ids, x, present = read_vectors("runs/x/emb_fold", "ft_text", product_ids=ids)  # [N, D]
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
from prodcat.core.errors import UnreadableFile
from prodcat.core.runtime import ensure_ray
from prodcat.core.telemetry import inc, set_gauge
from prodcat.embed.encoders import EncoderConfig
from prodcat.embed.encoders.inputs import (
    IMAGE_STATUS,
    Inputs,
    pixel_column,
    token_lengths,
    transfer_precision,
)
from prodcat.embed.extractor import FeatureExtractor, decode_images
from prodcat.embed.imaging import ImageLimits
from prodcat.embed.pools import describe_pools, gpu_fractions, pool_strategy
from prodcat.embed.store import (
    embedded_ids,
    make_manifest,
    prepare_store,
    read_manifest,
    record_trained_on,
    skipped_rows,
    to_store_table,
    trained_on_uri,
    write_part,
)

INPUT_COLUMNS = ["product_id", "title", "description", "image_uri"]


class EmbedConfig(StrictModel):
    """``prodcat embed``: which encoders, and how the pipeline runs."""

    products: str | None = Field(None, description="product table: Parquet file or folder, local or s3://")
    output: str | None = Field(None, description="embedding store folder, local or s3://")
    encoders: dict[str, EncoderConfig] = Field(description="encoder name → encoder config")
    image_limits: ImageLimits = Field(default_factory=ImageLimits, description="decode limits")
    decode_batch_size: int = Field(64, gt=0, description="images per decode task batch")
    decode_num_cpus: float = Field(0.25, gt=0, description="logical CPUs per decode or "
                                   "tokenization task")
    tokenize_batch_size: int = Field(1024, gt=0, description="products per tokenization batch; "
                                     "rows are sorted by token count within it, so text encoder "
                                     "batches carry little padding")
    auto_gpus: float = Field(1.0, gt=0, le=1, description="GPUs one actor of each num_gpus: auto "
                             "encoder share, split by gpu_cost (1: one actor each fits one GPU)")
    block_rows: int = Field(1024, gt=0, description="products per input block")
    write_rows: int = Field(4096, gt=0, description="products per store part file (at most)")
    cache_dir: str | None = Field(None, description="local cache for s3:// weights "
                                  "(default $PRODCAT_CACHE_DIR or ~/.cache/prodcat/weights)")
    limit: int | None = Field(None, gt=0, description="embed at most this many new products this run")
    platforms: list[str] | None = Field(None, description="embed only the products of these "
                                        "platforms (column `platform`; e.g. the store of an encoder "
                                        "fine-tuned without a platform, read by that platform's "
                                        "held-out set only); None: every product")
    splits: list[str] | None = Field(None, description="embed only the products of these splits "
                                     "(column `split`; e.g. `train`: the training rows a "
                                     "cross-platform held-out set fits on and predicts); None: every split")
    skip_unreadable: bool = Field(False, description="go on past store parts that cannot be read "
                                  "(their products are embedded again; the count is reported) "
                                  "instead of stopping")

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


def _prepare_stage(batch: dict, inputs: dict[str, Inputs], sizes: list[int],
                   limits: ImageLimits, drop: list[str], sort_by: list[str]) -> dict:
    """Ray Data task: decode images at ``sizes``, add each encoder's input columns, drop the raw
    columns no later stage reads, and sort rows by token count of ``sort_by`` features."""
    batch = dict(batch)
    if sizes:
        batch.update(decode_images(batch, sizes, limits))
    for prepare in inputs.values():
        batch.update(prepare(batch))
    for column in [*drop, IMAGE_STATUS, *(pixel_column(s) for s in sizes)]:
        batch.pop(column, None)
    if sort_by:
        order = np.argsort(token_lengths(batch, sort_by), kind="stable")
        batch = {k: np.asarray(v)[order] for k, v in batch.items()}
    return batch


# -- the pipeline ----------------------------------------------------------------------------------
def _write_stage(batch: dict, store: str, run_id: str, manifest: dict, encoders: list[str]) -> dict:
    """Ray Data task: write one part; returns one summary row (rows, seconds, status counts)."""
    table = to_store_table(batch, manifest)
    name = write_part(table, store, run_id)
    counts = {f: dict(zip(*np.unique(np.asarray(batch[f"status_{f}"], dtype=str),
                                     return_counts=True))) for f in manifest["features"]}
    counts = {f: {k: int(v) for k, v in c.items()} for f, c in counts.items()}
    row = {"file": [name], "rows": [table.num_rows], "statuses": [json.dumps(counts)],
           "written_at": [time.time()]}
    for enc in encoders:
        row[f"seconds_{enc}"] = [float(np.sum(batch[f"_seconds_{enc}"]))]
    return row


def load_products(uri: str, done: pa.Array, limit: int | None,
                  product_ids: pa.Array | list[str] | None = None,
                  platforms: list[str] | None = None,
                  splits: list[str] | None = None) -> tuple[pa.Table, int]:
    """The product rows still to embed (nulls in text and image columns made empty strings),
    and the table's total row count (of the rows in ``product_ids``, of ``platforms`` and of
    ``splits`` when given: a subset).

    Raises:
        ValueError: ``platforms`` (``splits``) is given and the table has no ``platform``
            (``split``) column.
    """
    import pyarrow.compute as pc

    filters = {c: v for c, v in (("platform", platforms), ("split", splits)) if v is not None}
    try:
        table = storage.read_table(uri, columns=INPUT_COLUMNS + list(filters))
    except UnreadableFile:
        storage.read_table(uri, columns=INPUT_COLUMNS)     # unreadable without them too: that error
        missing = [c for c in filters if not _readable(uri, c)]
        if not missing:
            raise
        raise ValueError(f"{', '.join(f'{c}s={filters[c]}' for c in missing)}: the product table {uri} "
                         f"has no {' or '.join(repr(c) for c in missing)} column") from None
    for column, values in filters.items():
        table = table.filter(pc.is_in(table[column], value_set=pa.array(values, pa.string())))
    table = table.drop_columns(list(filters))
    if product_ids is not None:
        table = table.filter(pc.is_in(table["product_id"], value_set=pa.array(
            [str(p) for p in product_ids], pa.string())))
    total = table.num_rows
    if len(done):
        table = table.filter(pc.invert(pc.is_in(table["product_id"], value_set=done)))
    if limit is not None:
        table = table.slice(0, limit)
    for name in ("title", "description", "image_uri"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.fill_null(table[name].cast(pa.string()), ""))
    return table, total


def _readable(uri: str, column: str) -> bool:
    try:
        storage.read_table(uri, columns=[column])
        return True
    except UnreadableFile:
        return False


def build_dataset(products: pa.Table, config: EmbedConfig, described: dict, inputs: dict,
                  gpus: dict[str, float], store: str, run_id: str, manifest: dict):
    """The Ray Data pipeline over ``products`` (not executed yet): CPU tasks that tokenize for the
    text encoders (rows sorted by token count per ``tokenize_batch_size``) and prepare the image
    readers' inputs (decode, resize, normalise, CLIP tokens), one actor pool per encoder (image
    readers first), the writer."""
    import ray

    blocks = [products.slice(i, config.block_rows)
              for i in range(0, products.num_rows, config.block_rows)]
    ds = ray.data.from_arrow(blocks)
    size_of = {d["encoder"]: d["image_size"] for d in described.values()}
    readers = [name for name in config.encoders if size_of[name]]
    texts = [name for name in config.encoders if not size_of[name]]
    raw = ["title", "description", "image_uri"]
    # two CPU stages with the same resources: Ray Data fuses them into one task per block
    if texts:
        ds = ds.map_batches(_prepare_stage, fn_kwargs={
            "inputs": {n: inputs[n] for n in texts}, "limits": config.image_limits, "sizes": [],
            "sort_by": [f for n in texts for f in inputs[n].token_features()],
            "drop": [] if readers else raw},
            batch_size=config.tokenize_batch_size, batch_format="numpy",
            num_cpus=config.decode_num_cpus, udf_modifying_row_count=False)
    if readers:
        ds = ds.map_batches(_prepare_stage, fn_kwargs={
            "inputs": {n: inputs[n] for n in readers}, "limits": config.image_limits,
            "sizes": sorted({size_of[n] for n in readers}), "sort_by": [], "drop": raw},
            batch_size=config.decode_batch_size, batch_format="numpy",
            num_cpus=config.decode_num_cpus, udf_modifying_row_count=False)
    for name in readers + texts:      # image readers first: their pixel columns go early
        ds = _encoder_stage(ds, name, config, described, gpus[name])
    return ds.map_batches(_write_stage, fn_kwargs={
        "store": store, "run_id": run_id, "manifest": manifest, "encoders": readers + texts},
        # 0 CPUs: writing is light, and a CPU share would let upstream decode tasks starve it
        batch_size=config.write_rows, batch_format="numpy", num_cpus=0)


def _encoder_stage(ds, name: str, config: EmbedConfig, described: dict, num_gpus: float):
    enc = config.encoders[name]
    key = next(d["fingerprint"]["key"] for d in described.values() if d["encoder"] == name)
    return ds.map_batches(
        FeatureExtractor, batch_size=enc.batch_size, batch_format="numpy",
        compute=pool_strategy(enc, num_gpus), num_cpus=enc.num_cpus,
        memory=int(enc.memory_gib * 2**30) if enc.memory_gib else None,
        num_gpus=num_gpus or None, udf_modifying_row_count=False,
        fn_constructor_kwargs={
            "encoders": {name: enc}, "image_limits": config.image_limits,
            "cache_dir": config.cache_dir, "expected": {name: key}, "keep_inputs": True,
            "num_threads": enc.num_threads or max(1, round(enc.num_cpus))})


def describe_encoders(config: EmbedConfig) -> tuple[dict[str, dict], dict[str, Inputs]]:
    """Load each encoder once in this process, on the CPU, for its fingerprint, dimension and
    input size (the manifest's features), and its CPU half (``inputs``, picklable)."""
    described, inputs = {}, {}
    for name, enc in config.encoders.items():
        extractor = FeatureExtractor({name: enc.model_copy(update={"device": "cpu"})},
                                     cache_dir=config.cache_dir)
        described.update(extractor.describe())
        inputs[name] = extractor.encoders[name].inputs
        del extractor
    return described, inputs


def cluster_gpus() -> float:
    """GPUs the Ray cluster has now (0 when it has none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_memory_gib() -> float:
    """Memory (GiB) the Ray cluster offers its tasks and actors now (Ray's ``memory`` resource)."""
    import ray

    return float(ray.cluster_resources().get("memory", 0.0)) / 2**30


def plan_pools(config: EmbedConfig, inputs: dict[str, Inputs], gpus_available: float,
               log: Callable[[str], None] = say, memory_available_gib: float | None = None,
               ) -> tuple[dict[str, float], dict[str, Inputs]]:
    """GPUs per actor of each encoder, and its ``inputs`` with pixels in the dtype its actors
    compute in; says where each pool runs, and warns when GPU actors wait for a GPU.

    Raises:
        ValueError: the encoders' ``memory_gib`` times their ``pool_size``, summed, is more than
            ``memory_available_gib`` (the cluster's memory; None: not checked): the pools could
            never all start, and Ray would wait for them without end.
    """
    reserved = {name: enc.pool_size * enc.memory_gib for name, enc in config.encoders.items() if enc.memory_gib}
    if memory_available_gib is not None and sum(reserved.values()) > memory_available_gib:
        asked = ", ".join(f"{name} {config.encoders[name].pool_size} × {config.encoders[name].memory_gib:g} GiB"
                          for name in reserved)
        raise ValueError(f"the encoders' actor pools reserve {sum(reserved.values()):.1f} GiB ({asked}) but "
                         f"the Ray cluster offers {memory_available_gib:.1f} GiB of memory: lower "
                         "encoders.<name>.memory_gib or pool_size, or set memory_gib: null")
    gpus = gpu_fractions(config.encoders, config.auto_gpus, gpus_available)
    prepared = {}
    for name, enc in config.encoders.items():
        device = "cuda" if gpus[name] > 0 or enc.device.startswith("cuda") else "cpu"
        prepared[name] = inputs[name].with_precision(transfer_precision(enc, device))
    log(f"[embed] pools: {describe_pools(config.encoders, gpus)}")
    if any(gpus.values()) and gpus_available <= 0:
        log("[embed] the encoders ask for GPUs but the cluster has none yet: their actors wait "
            "until a GPU node joins (use num_gpus: auto or 0 to run on CPUs)")
    return gpus, prepared


def plan_groups(config: EmbedConfig, described: dict, done: dict[str, pa.Array]
                ) -> list[tuple[list[str], pa.Array]]:
    """``[(encoder names, product ids they all hold)]``: encoders grouped by the products already
    embedded for every feature they make, in config order (usually one group; two when an
    encoder is added to a store, or a rerun finishes a group that was interrupted)."""
    groups: dict[tuple, tuple[list[str], pa.Array]] = {}
    for name in config.encoders:
        features = [f for f, d in described.items() if d["encoder"] == name]
        have = None
        for f in features:
            ids = set(done.get(f, pa.array([], pa.string())).to_pylist())
            have = ids if have is None else have & ids
        key = tuple(sorted(have or ()))
        if key in groups:
            groups[key][0].append(name)
        else:
            groups[key] = ([name], pa.array(list(key), pa.string()))
    return list(groups.values())


def run_embedding(config: EmbedConfig, overwrite: bool = False,
                  log: Callable[[str], None] = say, log_every_s: float = 5.0,
                  product_ids: pa.Array | list[str] | None = None) -> dict:
    """Embed the products not yet in the store (for each of the config's features); returns the
    run summary (also written to ``<store>/summary-<run>.json``).

    Features the store does not hold yet are added to it (its manifest, then parts of their own:
    module docstring); the features it holds are never rewritten.

    Args:
        product_ids: embed only these rows of the product table (e.g. one evaluation fold's).

    Raises:
        StoreMismatch: the store holds one of the config's features with other weights (and not
            ``overwrite``).
        StoreFormatError: the store is in an older format (``prodcat embed --upgrade-store``).
        UnreadableStorePart: a part cannot be read (and not ``config.skip_unreadable``).
        ValueError: ``products`` or ``output`` not set.
    """

    if not config.products or not config.output:
        raise ValueError("set products (the product table) and output (the store folder)")
    start = time.perf_counter()
    described, inputs = describe_encoders(config)
    manifest = make_manifest(described)
    before = None if overwrite else read_manifest(config.output)
    done, found = prepare_store(config.output, manifest, overwrite, config.skip_unreadable)
    unreadable = found.get("skipped", [])
    if unreadable:
        log(f"[embed] skipped {len(unreadable)} unreadable store part(s) with {skipped_rows(found):,} "
            f"rows (--skip-unreadable): {', '.join(s['file'] for s in unreadable)}; their "
            "products are embedded again")
    added = [f for f in described if before is not None and f not in before["features"]]
    if added:
        names = [f"{f} ({described[f]['encoder']}, fingerprint {described[f]['fingerprint']['key']})"
                 for f in added]
        log(f"[embed] adding {', '.join(names)} to the store at {config.output}, beside "
            f"{', '.join(before['features'])}")
    learnt = record_trained_on(config.output, {
        f: getattr(config.encoders[d["encoder"]], "weights", "") or "" for f, d in described.items()})
    for f, n in learnt.items():
        log(f"[embed] {f}: its encoder was fine-tuned on {n:,} products; their ids are kept in "
            f"{trained_on_uri(config.output, f)} (a decision-level model never scores {f} on them "
            "when it chooses; an evaluation refuses a fold whose test platform it learnt)")
    per_feature = embedded_ids(config.output, list(described), config.skip_unreadable)[0] \
        if before is not None else {}
    groups = plan_groups(config, described, per_feature)
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    ensure_ray()
    gpus, inputs = plan_pools(config, inputs, cluster_gpus(), log, cluster_memory_gib())
    ds_start, ds_epoch = time.perf_counter(), time.time()
    rows, total, group_summaries = [], 0, []
    for names, group_done in groups:
        products, total = load_products(config.products, group_done, config.limit, product_ids,
                                        config.platforms, config.splits)
        features = {f: d for f, d in described.items() if d["encoder"] in names}
        log(f"[embed] {total:,} products, {_already(products, total, group_done, config.limit):,} "
            f"already in the store, {products.num_rows:,} to embed this run ({run_id}); features: "
            + ", ".join(f"{f} ({d['encoder']}, {d['dim']}-d)" for f, d in features.items()))
        group_rows = embed_group(products, config, names, features, inputs, gpus, run_id, log,
                                 log_every_s)
        rows += group_rows
        group_summaries.append({"encoders": names, "features": list(features),
                                "embedded": sum(int(r["rows"]) for r in group_rows)})
    summary = summarize(rows, config, described, gpus, run_id, len(done), total,
                        pipeline_s=time.perf_counter() - ds_start, wall_s=time.perf_counter() - start,
                        started_at=ds_epoch)
    summary["groups"], summary["added_features"] = group_summaries, added
    summary["skipped_unreadable"] = {"parts": [s["file"] for s in unreadable],
                                     "rows": skipped_rows(found)}
    storage.write_text(storage.join(config.output, f"summary-{run_id}.json"),
                       json.dumps(summary, indent=2))
    failures = "; ".join(f"{f}: " + ", ".join(f"{n} {reason}" for reason, n in c.items())
                         for f, c in summary["failures"].items() if c) or "none"
    if summary["embedded"]:
        log(f"[embed] {summary['embedded']:,} products in {summary['pipeline_s']:.0f} s "
            f"({summary['products_per_s']} products/s); not encoded: {failures} → {config.output}")
    else:
        log(f"[embed] nothing new to embed: all {total:,} products already in {config.output}")
    return summary


def _already(todo: pa.Table, total: int, done: pa.Array, limit: int | None) -> int:
    """Rows of the table already embedded (``total`` less those still to do, before ``limit``)."""
    return total - todo.num_rows if limit is None or todo.num_rows < limit else min(len(done), total)


def embed_group(products: pa.Table, config: EmbedConfig, names: list[str], features: dict,
                inputs: dict, gpus: dict, run_id: str, log: Callable[[str], None],
                log_every_s: float) -> list[dict]:
    """Run the pipeline of the encoders ``names`` over ``products``, writing parts that hold
    their ``features``; returns one summary row per part written."""
    if not products.num_rows:
        return []
    group = config.model_copy(update={"encoders": {n: config.encoders[n] for n in names}})
    manifest = make_manifest(features)
    ds = build_dataset(products, group, features, {n: inputs[n] for n in names}, gpus,
                       config.output, run_id, manifest)
    progress = Progress("embed", products.num_rows, "products", every_s=log_every_s, log=log)
    rows: list[dict] = []
    for row in ds.iter_rows():
        rows.append(row)
        progress.advance(int(row["rows"]))
        record_part(row, run_id, sum(int(r["rows"]) for r in rows) / products.num_rows)
    return rows


def record_part(row: dict, run_id: str, share_done: float) -> None:
    """Prometheus metrics (:mod:`prodcat.core.telemetry`) of one written part: products, the
    modalities not encoded by feature and reason, and the run's progress."""
    inc("prodcat_embed_products", int(row["rows"]))
    for feature, counts in json.loads(row["statuses"]).items():
        for status, count in counts.items():
            if status != "ok":
                inc("prodcat_embed_failures", count, feature=feature, reason=status)
    set_gauge("prodcat_embed_progress", share_done, run=run_id)


def summarize(rows: list[dict], config: EmbedConfig, described: dict, gpus: dict[str, float],
              run_id: str, skipped: int, total: int, pipeline_s: float, wall_s: float,
              started_at: float | None = None) -> dict:
    """Run summary: products/s overall and per encoder (busy time: the forward, inputs prepared
    elsewhere), pool sizes and GPUs per actor, failures by reason; ``first_part_s`` (start-up:
    seconds until the first part was written) and ``steady_products_per_s`` (products after
    the first part over the time from the first part to the last; None with fewer than 2)."""
    n = sum(int(r["rows"]) for r in rows)
    statuses: dict[str, dict[str, int]] = {}
    for r in rows:
        for feature, counts in json.loads(r["statuses"]).items():
            for status, count in counts.items():
                statuses.setdefault(feature, {}).setdefault(status, 0)
                statuses[feature][status] += count
    encoders = {}
    for name, enc in config.encoders.items():
        busy = sum(float(r.get(f"seconds_{name}", 0.0)) for r in rows)
        encoders[name] = {"busy_s": round(busy, 2), "pool_size": enc.pool_size,
                          "max_pool_size": enc.max_pool_size or enc.pool_size,
                          "num_gpus": gpus.get(name, 0.0), "batch_size": enc.batch_size,
                          "products_per_s_per_actor": round(n / busy, 1) if busy else None}
    failures = {f: {s: c for s, c in counts.items() if s != "ok"} for f, counts in statuses.items()}
    parts = sorted((float(r["written_at"]), int(r["rows"])) for r in rows if "written_at" in r)
    steady = None
    if len(parts) >= 2 and parts[-1][0] > parts[0][0]:
        steady = round(sum(r for _, r in parts[1:]) / (parts[-1][0] - parts[0][0]), 1)
    return {"run_id": run_id, "products_total": total, "skipped_already_embedded": skipped,
            "embedded": n, "files": len(rows), "pipeline_s": round(pipeline_s, 2),
            "wall_s": round(wall_s, 2),
            "products_per_s": round(n / pipeline_s, 1) if n and pipeline_s else None,
            "first_part_s": round(parts[0][0] - started_at, 2) if parts and started_at else None,
            "steady_products_per_s": steady,
            "encoders": encoders, "failures": failures, "statuses": statuses,
            "features": {f: {"encoder": d["encoder"], "dim": d["dim"],
                             "fingerprint": d["fingerprint"]["key"]} for f, d in described.items()}}
