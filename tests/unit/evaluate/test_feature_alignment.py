"""benchmarks/feature_alignment.py: per-platform mean-centring and CORAL (Sun, Feng & Saenko,
AAAI 2016) of a new platform's embeddings, read from its unlabelled pool."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.predictions import benchmark


def _module():
    return benchmark("feature_alignment")


def test_centring_moves_each_platform_to_its_own_mean():
    fa = _module()
    rng = np.random.default_rng(0)
    source = rng.normal(size=(50, 3)) + [5.0, 0.0, 0.0]
    pool = rng.normal(size=(40, 3)) + [0.0, -4.0, 0.0]
    scored = pool[:7]
    train, test = fa.align("centred", source, pool, scored)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(test, scored - pool.mean(axis=0))
    same_train, same_test = fa.align("plain", source, pool, scored)
    assert same_train is source and same_test is scored


def test_coral_moves_the_source_covariance_towards_the_target_and_leaves_a_matched_one():
    fa = _module()
    rng = np.random.default_rng(1)
    source = rng.normal(size=(4000, 2)) * [3.0, 0.2]            # wide along x
    pool = rng.normal(size=(4000, 2)) * [0.2, 3.0]              # wide along y
    train, _ = fa.align("coral", source, pool, pool[:5])
    before, after = np.cov(source, rowvar=False), np.cov(train, rowvar=False)
    # the covariances are shrunk towards tr(C)/D · I (weight 1), so the source's shape moves
    # towards the target's without reaching it: x/y from ~225 to under a fifth of that
    assert before[0, 0] / before[1, 1] > 150
    assert after[0, 0] / after[1, 1] < before[0, 0] / before[1, 1] / 5
    # a source already shaped like the target is only centred
    same, _ = fa.align("coral", pool, pool, pool[:5])
    np.testing.assert_allclose(same, pool - pool.mean(axis=0), atol=1e-9)


def test_an_unknown_variant_is_refused():
    fa = _module()
    with pytest.raises(ValueError, match="unknown variant"):
        fa.align("whiten", np.ones((3, 2)), np.ones((3, 2)), np.ones((1, 2)))


def test_a_pair_with_nothing_to_score_is_skipped_and_said(tmp_path, capsys, monkeypatch):
    """Two platforms whose label spaces do not meet: every cross pair has no product to score; the
    in-platform pairs are scored. The feature table, the regression and the metrics are stand-ins
    (what is tested is the loop over pairs, not their figures)."""
    fa = _module()
    import types

    import prodcat.train.features as features

    rng = np.random.default_rng(0)
    n = 80
    platform = np.array(["a"] * 40 + ["b"] * 40)
    split = np.array((["train"] * 30 + ["val"] * 10) * 2)
    node = np.array([1, 2] * 20 + [3, 4] * 20)
    x = rng.normal(size=(n, 4)) + node[:, None]

    class Tax:
        leaves = np.array([1, 2, 3, 4])

    table = types.SimpleNamespace(
        taxonomy=Tax(), arrays=lambda: ({"text": x}, {"text": np.ones(n, bool)}, None),
        column=lambda name: {"platform": platform, "split": split, "node": node,
                             "group_id": np.arange(n).astype(str)}[name])
    monkeypatch.setattr(features, "load_feature_table", lambda *a, **k: table)

    class Probe:
        def __init__(self, leaves):
            self.leaves = leaves

        def scores(self, inputs):
            return np.zeros((len(inputs), len(self.leaves)))

    import prodcat.models.components as components
    monkeypatch.setattr(components.LinearComponent, "fit",
                        classmethod(lambda cls, name, feature, src, nodes, tax, **k: Probe(np.unique(nodes))))
    import prodcat.core.metrics as metrics
    monkeypatch.setattr(metrics, "hierarchical_counts",
                        lambda tax, true, pred: np.stack([(true == pred).astype(int), np.ones(len(true), int),
                                                          np.ones(len(true), int)], axis=1))
    assert fa.main(["--products", "p", "--embeddings", "e", "--out", str(tmp_path), "--features", "text"]) == 0
    out = capsys.readouterr().out
    assert "text a → b: skipped (0 products in the label space" in out
    assert "text b → a: skipped (0 products in the label space" in out
    import json
    rows = json.loads((tmp_path / "feature_alignment.json").read_text())["rows"]
    assert [(r["train"], r["scored"]) for r in rows] == [("a", "a"), ("b", "b")]
