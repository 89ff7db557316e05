"""A fine-tuned text encoder per fold: the evaluation's models that read its feature see only it.

For each fold, :func:`fold_feature` fine-tunes the text encoder (:func:`prodcat.train.finetune.finetune`,
Ray Train) on the ``train`` split of the fold's *training* platforms only (in a
leave-one-platform-out fold the held-out platform is never read), embeds the rows the fold's
models read (:func:`prodcat.evaluate.grid.rows_read`) with the new encoder version into a store of
its own (``<output>/finetune/<fold>/embeddings``, resumable), and returns the vectors aligned with
the fold's rows (``present`` False for rows no model reads), which the evaluation adds to the fold's
feature table as ``finetune.feature`` (default ``ft_text``). One fine-tuning per fold, with the
first seed: the seeds then vary the models trained on top of it.

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
    nested: bool = Field(False, description="also fine-tune once per training platform Q of a fold "
                         "(on the others), so the cross-platform held-out set of Q reads the "
                         "feature from an encoder that never saw Q; off: those sets read the fold's "
                         "encoder, which learnt other products of Q (the choice then favours it)")


def fold_feature(settings: FinetuneSettings, products: str, output: str, fold_name: str,
                 train_platforms: list[str], product_ids: np.ndarray, seed: int,
                 progress: Callable[[str], None] | None = None,
                 embed_ids: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(vectors float32 [B, D], present bool [B], trained on: product ids (str), summary)`` of
    the fold's encoder for ``product_ids`` (the fold's rows, in order); "trained on" are the
    products the encoder was fine-tuned on (:attr:`FeatureTable.trained_on`: the decision-level
    choice never scores the fine-tuned component on them).

    ``embed_ids``: the rows the fold's models read (:func:`prodcat.evaluate.grid.rows_read`); only
    they are embedded (the others get ``present`` False), None: every row of ``product_ids``. At
    full size the leave-one-platform-out folds read 15,982 (Flipkart held out) and 25,365 (H&M)
    of their ~56,000 rows (a 10,000-product training subsample, the validation and calibration
    splits, the test rows); MiniLM embedded 25-34 products/s on 2 cores (stop 30).

    Raises:
        ValueError: ``settings.config`` is not set.
    """
    from prodcat.embed.pipeline import EmbedConfig, run_embedding
    from prodcat.embed.store import read_vectors
    from prodcat.train.finetune import finetune, training_rows
    from prodcat.train.finetune_config import FinetuneConfig

    if not settings.config:
        raise ValueError(f"models read the fine-tuned feature {settings.feature!r}: set "
                         "finetune.config (e.g. configs/finetune.default.yaml)")
    folder = storage.join(output, "finetune", fold_name)
    config = load_config(FinetuneConfig, settings.config, {
        **settings.overrides, "data.products": products, "data.platforms": list(train_platforms),
        "data.sample_seed": seed, "optim.seed": seed, "output": folder, "name": fold_name})
    trained_on = np.asarray(training_rows(config)["product_id"].to_pylist(), dtype=str)
    audit.read(f"finetune@{fold_name}", trained_on)
    result = finetune(config, progress=progress)
    if result.feature != settings.feature:
        raise ValueError(f"the fine-tuned encoder makes feature {result.feature!r}, not "
                         f"{settings.feature!r}: set finetune.feature or feature_prefix")
    store = storage.join(folder, "embeddings")
    embed = load_config(EmbedConfig, result.snippet, {"products": products, "output": store})
    wanted = product_ids if embed_ids is None else embed_ids
    run_embedding(embed, product_ids=[str(p) for p in wanted], log=progress or (lambda _m: None))
    _, x, present = read_vectors(store, settings.feature, product_ids=product_ids)
    return x, present, trained_on, {"fold": fold_name, "platforms": list(train_platforms),
                                    "encoder": result.encoder, "fingerprint": result.fingerprint,
                        "train_products": result.train_products, "products_per_s": result.products_per_s,
                        "seconds": result.seconds, "embedded": int(present.sum()),
                        "fold_rows": int(len(product_ids))}
