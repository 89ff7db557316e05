"""benchmarks/label_hubness.py: hubness reduction of the zero-shot label scores (CSLS, Conneau
et al. 2018; mean-centring), read from the new platform's unlabelled pool."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]


def _module():
    spec = importlib.util.spec_from_file_location("label_hubness", ROOT / "benchmarks" / "label_hubness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_hub_label_loses_the_products_it_only_nearly_describes():
    hub = _module()
    # label 0 is near every product of the pool (a hub); label 1 is near a few only
    pool = np.array([[0.9, 0.1]] * 20 + [[0.6, 0.7]] * 3)
    scored = np.array([[0.62, 0.60],                     # plain: label 0 by a hair
                       [0.95, 0.10]])                    # label 0 clearly
    found = hub.variants(scored, pool, ks=(3,))
    assert found["plain"].argmax(axis=1).tolist() == [0, 0]
    assert found["csls3"].argmax(axis=1).tolist() == [1, 0]
    np.testing.assert_allclose(found["csls3"], 2 * scored - np.array([0.9, 0.7]))
    np.testing.assert_allclose(found["centred"], scored - pool.mean(axis=0))


def test_k_larger_than_the_pool_reads_the_whole_pool():
    hub = _module()
    pool = np.array([[0.5, 0.1], [0.3, 0.2]])
    found = hub.variants(np.array([[0.4, 0.4]]), pool, ks=(10,))
    np.testing.assert_allclose(found["csls10"], 2 * np.array([[0.4, 0.4]]) - pool.mean(axis=0))
