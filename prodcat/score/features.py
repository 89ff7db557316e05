"""Vectors bulk scoring reuses from an embedding store: for each feature whose encoder
fingerprint in the store equals the checkpoint's, the stored vector instead of encoding again.

Letters: B rows, D_f dimension of feature f.
"""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from prodcat.cascade.spec import CascadeSpec
from prodcat.embed.store import (
    feature_matrix,
    read_manifest,
    read_store,
    skipped_rows,
    vector_column,
)
from prodcat.models.checkpoint import CONFIG, read_json
from prodcat.score.config import ScoreConfig


def checkpoint_fingerprints(checkpoint: str) -> dict[str, str]:
    """``{feature: encoder fingerprint key}`` recorded in a checkpoint's ``config.json``, for the
    features an encoder makes (the lexical feature is computed from the text, never stored)."""
    features = read_json(checkpoint, CONFIG).get("features", {})
    keys = {f: info.get("fingerprint", {}).get("key") for f, info in features.items()}
    return {f: key for f, key in keys.items() if key}


def fingerprint_mismatches(checkpoint: str, manifest: dict) -> dict[str, tuple[str, str | None]]:
    """``{feature: (checkpoint's encoder key, store's key or None)}`` for every feature whose
    encoder the checkpoint records (:func:`checkpoint_fingerprints`) and the store ``manifest``
    does not hold: its vectors would come from another encoder, or are missing. Empty: the store
    serves the checkpoint as trained."""
    features = (manifest or {}).get("features") or {}
    have = {f: (features.get(f) or {}).get("fingerprint", {}).get("key") for f in features}
    return {f: (want, have.get(f)) for f, want in checkpoint_fingerprints(checkpoint).items()
            if have.get(f) != want}


def attach_store(table: pa.Table, store: pa.Table, manifest: dict,
                 fingerprints: dict[str, str]) -> pa.Table:
    """Add ``emb_<f>``, ``status_<f>``, ``fp_<f>`` from an embedding store for each feature whose
    store fingerprint equals the stage's. Vectors are never null: rows not in the store get a
    zero vector with null status and fingerprint (encoded later); the status says which vectors
    exist (:func:`prodcat.embed.store.feature_matrix`). Features already attached are left alone."""
    index = pc.index_in(table["product_id"], value_set=store["product_id"])
    found = index.is_valid().to_numpy(zero_copy_only=False)
    for f, key in fingerprints.items():
        stored = manifest.get("features", {}).get(f, {}).get("fingerprint", {}).get("key")
        if f"fp_{f}" in table.column_names or f"emb_{f}" not in store.column_names or stored != key:
            continue
        # only this table's rows (null where not stored), never the whole store made dense
        taken = store.select([f"emb_{f}", f"status_{f}"]).take(index)
        vectors, present = feature_matrix(taken, f)               # [B, D_f], [B]
        table = table.append_column(f"emb_{f}", vector_column(vectors, present))
        table = table.append_column(f"status_{f}", taken[f"status_{f}"])
        table = table.append_column(f"fp_{f}", pc.if_else(pa.array(found), pa.scalar(key),
                                                          pa.scalar(None, pa.string())))
    return table


def load_store(config: ScoreConfig, spec: CascadeSpec,
               log: Callable[[str], None]) -> tuple[pa.Table | None, dict, dict]:
    """``(store table or None, manifest, {stage: {feature: fingerprint key}})``: the vectors of
    ``config.features_from`` whose fingerprints match one of the cascade's stages.

    Raises:
        FileNotFoundError: when ``config.features_from`` holds no embedding store.
    """

    fps = {"text": checkpoint_fingerprints(spec.text_model),
           "multimodal": checkpoint_fingerprints(spec.multimodal_model)}
    if not config.features_from:
        return None, {}, fps
    features = sorted(set(fps["text"]) | set(fps["multimodal"]))
    manifest = read_manifest(config.features_from)
    if manifest is None:
        raise FileNotFoundError(f"no embedding store at {config.features_from}")
    usable = [f for f in features if manifest.get("features", {}).get(f, {}).get(
        "fingerprint", {}).get("key") in (fps["text"].get(f), fps["multimodal"].get(f))]
    columns = ["product_id"] + [c for f in usable for c in (f"emb_{f}", f"status_{f}")]
    store, manifest = read_store(config.features_from, columns=columns,
                                 skip_unreadable=config.skip_unreadable)
    if manifest["skipped"]:
        log(f"[score] skipped {len(manifest['skipped'])} unreadable store part(s) with "
            f"{skipped_rows(manifest):,} rows (--skip-unreadable); those rows are encoded")
    log(f"[score] reusing {', '.join(usable) or 'no'} vectors of {store.num_rows} products from "
        f"{config.features_from} (fingerprints match); other features and rows are encoded")
    return store, manifest, fps
