"""benchmarks/feature_alignment.py: per-platform mean-centring and CORAL (Sun, Feng & Saenko,
AAAI 2016) of a new platform's embeddings, read from its unlabelled pool."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]


def _module():
    spec = importlib.util.spec_from_file_location("feature_alignment", ROOT / "benchmarks" / "feature_alignment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
