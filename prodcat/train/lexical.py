"""The lexical modality in training and inference: out-of-fold TF-IDF scores as a feature.

For a model whose ``modalities`` include ``lexical`` (:mod:`prodcat.models.lexical`), training
fits the TF-IDF + linear model on the training rows and gives every row its scores as the
``lexical`` feature ``[B, C]``: training rows out-of-fold (folds by near-duplicate group), all
other rows (validation, calibration, test) from the model fitted on all training rows. The fitted
model is saved in the checkpoint folder and scores raw products at inference.
"""

from __future__ import annotations

import numpy as np

from prodcat.models.checkpoint import LoadedModel
from prodcat.models.lexical import FEATURE, LexicalConfig, LexicalScorer, fit_out_of_fold
from prodcat.train.features import TEXT, FeatureTable


def fit_lexical(table: FeatureTable, train_rows: np.ndarray,
                config: LexicalConfig | None = None) -> tuple[LexicalScorer, FeatureTable]:
    """``(scorer, table with the lexical feature)``; ``train_rows`` is ``[B]`` bool.

    Raises:
        ValueError: when the table carries no product text (``text`` column), or the training
            rows have fewer than 2 labels.
    """
    if TEXT not in table.table.column_names:
        raise ValueError("the feature table has no product text; load it with load_feature_table")
    train_rows = np.asarray(train_rows, bool)
    texts = table.column(TEXT).tolist()
    fit_idx = np.flatnonzero(train_rows)
    scorer, oof = fit_out_of_fold([texts[i] for i in fit_idx], table.column("node")[fit_idx],
                                  table.column("group_id")[fit_idx], table.taxonomy, config)
    scores = np.zeros((len(table), scorer.dim), np.float32)
    scores[fit_idx] = oof
    rest = np.flatnonzero(~train_rows)
    scores[rest] = scorer.scores([texts[i] for i in rest])
    return scorer, table.add_feature(FEATURE, scores)


def with_lexical(rows: FeatureTable, scorer: LexicalScorer) -> FeatureTable:
    """``rows`` with the ``lexical`` feature scored by ``scorer`` (inference)."""
    return rows.add_feature(FEATURE, scorer.scores(rows.column(TEXT).tolist()))


def model_inputs(loaded: LoadedModel, rows: FeatureTable) -> tuple[dict, dict]:
    """``(features {f: [B, D_f]}, present {f: [B]})`` of ``rows`` for ``loaded``, the lexical
    feature computed by the checkpoint's own lexical model when it uses one.

    Raises:
        ValueError: when the model uses the lexical feature but its checkpoint has no lexical model.
    """
    if FEATURE in loaded.features:
        if loaded.lexical is None:
            raise ValueError(f"{loaded.uri} uses the lexical feature but holds no lexical model")
        rows = with_lexical(rows, loaded.lexical)
    feats, present, _ = rows.with_features(loaded.features).arrays()
    return feats, present
