"""benchmarks/store_diff.py: two stores of the same products compared feature by feature."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.store_diff import main
from prodcat.embed.store import make_manifest, prepare_store, to_store_table, write_part

pytestmark = pytest.mark.unit


def _store(path, vectors: np.ndarray, ids: list[str], status: list[str]) -> str:
    manifest = make_manifest({"text": {"encoder": "text", "modality": "text", "dim": vectors.shape[1],
                                       "image_size": None, "fingerprint": {"key": "fp-text"}}})
    prepare_store(str(path), manifest)
    batch = {"product_id": ids, "emb_text": vectors, "status_text": status}
    write_part(to_store_table(batch, manifest), str(path), "test")
    return str(path)


def test_counts_only_the_vectors_that_differ_among_products_both_stores_hold(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = x.copy()
    y[2, 1] += 1e-3                                      # one vector moved a little
    ids = [f"shop:{i}" for i in range(6)]
    a = _store(tmp_path / "a", x, ids, ["ok"] * 6)
    # store b lists the products in another order and failed on one of them
    order = [5, 4, 3, 2, 1, 0]
    b = _store(tmp_path / "b", y[order], [ids[i] for i in order], ["ok"] * 5 + ["no_text"])
    result = main([a, b, "--features", "text", "--out", str(tmp_path / "d.json")])["text"]
    assert result["compared"] == 5                       # shop:0 failed in b
    assert result["differ"] == 1 and result["product_ids"] == ["shop:2"]
    assert result["max_abs"] == pytest.approx(1e-3, rel=1e-3)
    assert 0.99 < result["min_cosine"] < 1.0
    assert json.loads((tmp_path / "d.json").read_text())["text"]["differ"] == 1
    assert main([a, a, "--features", "text"])["text"]["differ"] == 0
