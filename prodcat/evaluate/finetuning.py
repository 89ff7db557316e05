"""A fine-tuned text encoder per fold: the evaluation's models that read its feature see only it.

For each fold, :func:`fold_feature` fine-tunes the text encoder (:func:`prodcat.train.finetune.finetune`,
Ray Train) on the ``train`` split of the fold's *training* platforms only (in a
leave-one-platform-out fold the held-out platform is never read), embeds the rows the fold's
models read (:func:`prodcat.evaluate.grid.rows_read`) and every product adapting reads, covered
by the fold's label space or not (:func:`prodcat.evaluate.folds.adapt_rows`), with the new encoder version into the
encoder's store (``<finetune.cache or output/finetune>/<key>/embeddings``, resumable), and returns
the vectors aligned with the fold's rows (``present`` False for rows no model of the fold reads),
which the evaluation adds to the fold's feature table as ``finetune.feature`` (default
``ft_text``). With ``per_seed`` (the default) each seed fine-tunes its own encoder on its own
training subsample, so the spread over seeds includes the fine-tuning's; off, one fine-tuning
per fold with the first seed and the seeds vary only the models trained on top of it. The folder ``<key>`` (:func:`encoder_key`) names the encoder by its
platforms, seed and settings, so a fold (or a later evaluation given ``finetune.cache``) that
needs an encoder already fine-tuned reuses it (:func:`prodcat.train.finetune.finished`) and
embeds only the rows the store lacks.

The decision-level models choose their weights on held-out products of the training platforms.
The products the fold's encoder was fine-tuned on are left out of those held-out sets
(:attr:`prodcat.train.features.FeatureTable.trained_on`): at full size, scored on them too, the
fine-tuned component alone looked 4 points better than the frozen text one (0.985 against 0.943) and was chosen alone
for the Flipkart fold, where it was no better than the frozen one (docs/evaluation.md). Without
them it still looked better (0.984 against 0.944): the encoder had learnt the other products of
the held-out sets' platforms. With ``nested`` each cross-platform held-out set of platform Q reads
the feature from one more fine-tuning, on the fold's training platforms without Q
(``<fold>-without-<Q>``; :meth:`prodcat.train.features.FeatureTable.add_variant`), so the
component is chosen as it is then tested: on a platform its encoder never read. It costs one
fine-tuning per training platform of the fold (two more per leave-one-platform-out fold of three
platforms, three for the in-platform fold), each embedding only the training subsamples the
held-out sets are drawn from (:func:`prodcat.evaluate.grid.training_rows_read`).

Letters: B products, D dimension.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from pydantic import Field

from prodcat.core import audit, storage
from prodcat.core.config import StrictModel, load_config


class FinetuneSettings(StrictModel):
    """Fine-tuning the text encoder inside each fold (for models that read ``feature``)."""

    config: str | None = Field(None, description="FinetuneConfig YAML (e.g. configs/finetune.default.yaml); "
                               "null: no fine-tuning (models may not read `feature`)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted FinetuneConfig overrides, "
                                      "e.g. {data.max_train_products: 6000, optim.epochs: 2}")
    feature: str = Field("ft_text", description="the feature the fine-tuned encoder makes "
                         "(feature_prefix + 'text')")
    nested: bool = Field(True, description="also fine-tune once per training platform Q of a fold "
                         "(on the others), so the cross-platform held-out set of Q reads the "
                         "feature from an encoder that never saw Q (default since stop 35, as the "
                         "main job's nested_finetune); off: those sets read the fold's encoder, "
                         "which learnt other products of Q (the choice then favours it), for "
                         "fewer fine-tunings")
    per_seed: bool = Field(True, description="each seed of the evaluation fine-tunes its own "
                           "encoder (its own training subsample: the spread over seeds includes "
                           "the fine-tuning's); false: one fine-tuning per fold with the first "
                           "seed, shared by the seeds (a seed's cost is then its models only)")
    cache: str | None = Field(None, description="folder of the fine-tuned encoders, one subfolder "
                              "per distinct encoder (platforms, seed, settings): a fold reuses one "
                              "another fold or an earlier evaluation made; null: <output>/finetune")


def fold_feature(settings: FinetuneSettings, products: str, output: str, fold_name: str,
                 train_platforms: list[str], product_ids: np.ndarray, seed: int,
                 progress: Callable[[str], None] | None = None,
                 embed_ids: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(vectors float32 [B, D], present bool [B], trained on: product ids (str), summary)`` of
    the fold's encoder for ``product_ids`` (the fold's rows, in order); "trained on" are the
    products the encoder was fine-tuned on (:attr:`FeatureTable.trained_on`: the decision-level
    choice never scores the fine-tuned component on them). The summary names the encoder's
    ``folder`` and ``encoder`` relative to the fine-tuning root (``settings.cache`` or
    ``<output>/finetune``), so an evaluation's ``results.json`` names no path of this machine.

    ``embed_ids``: the rows the fold's models read (:func:`prodcat.evaluate.grid.rows_read`, and
    since stop 60 every product adapting reads, :func:`prodcat.evaluate.folds.adapt_rows`); only
    they are embedded (the others get ``present`` False), None: every row of ``product_ids``. At
    full size the leave-one-platform-out folds read 15,982 (Flipkart held out) and 25,365 (H&M)
    of their ~56,000 rows (a 10,000-product training subsample, the validation and calibration
    splits, the test rows); MiniLM embedded 25-34 products/s on 2 cores (stop 30).

    Raises:
        ValueError: ``settings.config`` is not set.
    """
    from prodcat.embed.pipeline import EmbedConfig, run_embedding
    from prodcat.embed.store import read_vectors
    from prodcat.train.finetune import finetune, finished, training_rows
    from prodcat.train.finetune_config import FinetuneConfig

    if not settings.config:
        raise ValueError(f"models read the fine-tuned feature {settings.feature!r}: set "
                         "finetune.config (e.g. configs/finetune.default.yaml)")
    config = load_config(FinetuneConfig, settings.config, {
        **settings.overrides, "data.products": products, "data.platforms": sorted(train_platforms),
        "data.sample_seed": seed, "optim.seed": seed})
    rows = training_rows(config)
    key = encoder_key(config, rows)
    root = settings.cache or storage.join(output, "finetune")
    folder = storage.join(root, key)
    config = config.model_copy(update={"output": folder, "name": key})
    trained_on = np.asarray(rows["product_id"].to_pylist(), dtype=str)
    audit.read(f"finetune@{fold_name}", trained_on)
    result = finished(config, rows)
    if result is None:
        earlier = earlier_encoder(root, key, config, rows)
        if earlier is not None:
            folder, result = earlier
            key = folder.rstrip("/").rsplit("/", 1)[-1]
            config = config.model_copy(update={"output": folder, "name": key})
    reused = result is not None
    if reused:
        (progress or (lambda _m: None))(
            f"[evaluate] {fold_name}: reusing the encoder fine-tuned on {', '.join(config.data.platforms)} "
            f"(seed {seed}) in {folder} (fingerprint {result.fingerprint[:12]})")
    else:
        result = finetune(config, progress=progress)
    if result.feature != settings.feature:
        raise ValueError(f"the fine-tuned encoder makes feature {result.feature!r}, not "
                         f"{settings.feature!r}: set finetune.feature or feature_prefix")
    store = storage.join(folder, "embeddings")
    embed = load_config(EmbedConfig, result.snippet, {
        "products": products, "output": store, f"encoders.{config.encoder_name}.weights": result.encoder})
    wanted = product_ids if embed_ids is None else embed_ids
    run_embedding(embed, product_ids=[str(p) for p in wanted], log=progress or (lambda _m: None))
    _, x, present = read_vectors(store, settings.feature, product_ids=product_ids)
    if embed_ids is not None:    # the store may hold rows other folds read: this fold gets its own
        present &= np.isin(np.asarray(product_ids, dtype=str), np.asarray(embed_ids, dtype=str))
        x = np.where(present[:, None], x, np.float32(0.0)).astype(np.float32, copy=False)
    # the record names the encoder inside the fine-tuning root (relocatable: no path of this machine)
    encoder = storage.relative_ref(root, result.encoder) or result.encoder
    return x, present, trained_on, {"fold": fold_name, "seed": seed, "platforms": list(config.data.platforms),
                                    "encoder": encoder, "fingerprint": result.fingerprint,
                        "train_products": result.train_products, "products_per_s": result.products_per_s,
                        "seconds": result.seconds, "embedded": int(present.sum()),
                        "fold_rows": int(len(product_ids)), "folder": key, "reused": reused}


def earlier_encoder(root: str, key: str, config, rows) -> tuple[str, Any] | None:
    """``(folder, FinetuneResult)`` of an encoder in ``root`` finished with the settings and
    training rows of ``config`` (:func:`prodcat.train.finetune.finished`) under another name than
    ``key`` with the same ``<platforms>-seed<seed>-`` start, or None. Such a folder was named by
    an earlier :func:`encoder_key` (before stop 34 the key hashed the product table's path, not
    its training rows), so a cache made then is reused instead of fine-tuned again."""
    from prodcat.train.finetune import finished

    prefix = key.rsplit("-", 1)[0] + "-"
    for folder in storage.list_folders(root, prefix):
        if folder.rstrip("/").rsplit("/", 1)[-1] == key:
            continue
        found = finished(config.model_copy(update={"output": folder}), rows)
        if found is not None:
            return folder, found
    return None


def encoder_key(config, rows=None) -> str:
    """The folder name of one distinct fine-tuned encoder, ``<platforms>-seed<seed>-<digest>``
    (the digest: sha256, 8 hex, over the settings that make it,
    :func:`prodcat.train.finetune.run_identity` of ``config``, a ``FinetuneConfig``, and its
    training rows, :func:`prodcat.train.finetune.training_digest`; ``rows``: its
    :func:`~prodcat.train.finetune.training_rows` when already read). Not the product table's
    path: the same table moved, or named relative or absolute, gives the same key. Folds that
    fine-tune on the same platforms with the same seed and settings share it: at full size with
    ``nested`` the four folds of three platforms need 12 encoders per seed, 7 of them distinct
    (the in-platform fold's inner encoders are the leave-one-platform-out folds' own; each single
    platform is the inner encoder of two of them)."""
    import hashlib
    import json

    from prodcat.train.finetune import run_identity, training_digest, training_rows

    digest = training_digest(training_rows(config) if rows is None else rows)
    settings = json.dumps([run_identity(config), digest], sort_keys=True)
    platforms = "+".join(config.data.platforms) if config.data.platforms else "all"
    return f"{platforms}-seed{config.data.sample_seed}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"
