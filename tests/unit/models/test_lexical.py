"""The lexical modality's TF-IDF + linear model: scores, out-of-fold stacking, storage without
pickle (tests.fixtures.synthetic catalogue: titles name the category)."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.models.lexical import UNSEEN, LexicalConfig, LexicalScorer, fit_out_of_fold, product_texts
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.unit


def _data(n=120):
    table, taxonomy = synthetic_products(n)
    nodes = np.asarray([taxonomy.label_node(c) for c in table["category_id"].to_pylist()])
    return product_texts(table), nodes, taxonomy, table["product_id"].to_pylist()


def test_scores_cover_every_leaf_and_unseen_ones_score_lowest():
    texts, nodes, taxonomy, _ = _data()
    leaves = np.sort(taxonomy.leaves)
    seen = np.isin(nodes, leaves[:-1])                    # the last leaf is never trained on
    scorer = LexicalScorer(LexicalConfig(min_df=1)).fit([t for t, s in zip(texts, seen) if s],
                                                        nodes[seen], leaves)
    scores = scorer.scores(texts[:10])
    assert scores.shape == (10, len(leaves)) and scorer.dim == len(leaves)
    assert np.all(scores[:, -1] == UNSEEN) and np.all(scores[:, :-1].max(axis=1) > UNSEEN)
    right = scorer.predict([t for t, s in zip(texts, seen) if s]) == nodes[seen]
    assert right.mean() > 0.9                             # titles name the category


def test_round_trip_through_files_without_pickle(tmp_path):
    texts, nodes, taxonomy, _ = _data()
    scorer = LexicalScorer(LexicalConfig(min_df=1)).fit(texts, nodes, taxonomy.leaves)
    key = scorer.save(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lexical.json", "lexical.safetensors"]
    loaded = LexicalScorer.load(str(tmp_path))
    np.testing.assert_allclose(loaded.scores(texts), scorer.scores(texts), atol=2e-3)  # float16 weights
    assert (loaded.predict(texts) == scorer.predict(texts)).all() and len(key) == 16


def test_out_of_fold_scores_never_come_from_a_model_that_saw_the_row():
    """A label whose only two products form one near-duplicate group: out of fold, no model that
    scores them has seen that label (its score is UNSEEN); the model fitted on all rows has."""
    texts, nodes, taxonomy, _ = _data()
    rare = nodes[0]
    keep = np.flatnonzero(nodes != rare).tolist() + np.flatnonzero(nodes == rare)[:2].tolist()
    texts, nodes = [texts[i] for i in keep], nodes[keep]
    groups = [f"g{i}" for i in range(len(texts) - 2)] + ["pair", "pair"]
    full, oof = fit_out_of_fold(texts, nodes, groups, taxonomy, LexicalConfig(min_df=1, folds=3))
    column = int(np.searchsorted(np.sort(taxonomy.leaves), rare))
    assert oof.shape == (len(texts), full.dim)
    assert np.all(oof[-2:, column] == UNSEEN)
    assert np.all(full.scores(texts[-2:])[:, column] > UNSEEN)


def test_out_of_fold_scores_need_two_groups_and_say_which_rows_stay_unscored():
    texts, nodes, taxonomy, ids = _data()
    with pytest.raises(ValueError, match="2 or more near-duplicate groups"):
        fit_out_of_fold(texts, nodes, ["one"] * len(texts), taxonomy, LexicalConfig(min_df=1))
    first = nodes == nodes[0]                     # fold 1: one category; fold 2: the others
    groups = np.where(first, "a", "b")
    with pytest.warns(UserWarning, match="keep the 'unseen' lexical score"):
        _, oof = fit_out_of_fold(texts, nodes, groups, taxonomy, LexicalConfig(min_df=1, folds=2))
    assert (oof[~first] == UNSEEN).all() and (oof[first] != UNSEEN).any()
