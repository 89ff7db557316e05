"""The feature table a model is trained from: products joined with the embedding store. No Ray."""

from __future__ import annotations

import pyarrow as pa
import pytest

from prodcat.train.features import FeatureTable, join_features
from tests.fixtures.store import synthetic_store
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.unit


def test_join_features_zero_fills_missing_and_drops_unlabelled_or_unembedded():
    products, taxonomy = synthetic_products(30)
    cids = products["category_id"].to_pylist()
    cids[0] = None  # unlabelled
    products = products.set_column(products.schema.get_field_index("category_id"), "category_id",
                                   pa.array(cids, pa.int64()))
    store, _ = synthetic_store(products, taxonomy, dims={"text": 4, "image": 3})
    store = store.slice(0, 25)  # a partial store: the last 5 products are not embedded yet
    table = FeatureTable(join_features(products, store, ["text", "image"], taxonomy),
                         ["text", "image"], {"text": 4, "image": 3}, taxonomy)
    assert table.column("product_id").tolist() == products["product_id"].to_pylist()[1:25]
    feats, present, targets = table.arrays()
    ids = table.column("product_id").tolist()
    missing_image = [i for i, pid in enumerate(ids) if int(pid.split(":")[1]) % 7 == 6]
    assert missing_image and not present["image"][missing_image].any()
    assert (feats["image"][missing_image] == 0).all() and present["text"].all()
    assert targets.shape == (24, taxonomy.num_levels)
    nodes = table.column("node")
    assert all((targets[i] == taxonomy.targets(int(n))).all() for i, n in enumerate(nodes))
    with pytest.raises(KeyError, match="clip"):
        join_features(products, store, ["clip"], taxonomy)


def test_the_products_a_fine_tuned_encoder_learnt_follow_its_feature():
    """add_feature(trained_on=...) records them; row selections keep the record, dropping the
    feature drops it, and seen_by marks the rows for the features asked about only."""
    import numpy as np

    products, taxonomy = synthetic_products(20)
    store, _ = synthetic_store(products, taxonomy, dims={"text": 4})
    table = FeatureTable(join_features(products, store, ["text"], taxonomy), ["text"], {"text": 4},
                         taxonomy)
    ids = table.column("product_id")
    tuned = table.add_feature("ft_text", np.ones((len(table), 2), np.float32), trained_on=ids[:5])
    assert tuned.seen_by(["ft_text"]).tolist() == [True] * 5 + [False] * (len(table) - 5)
    assert not tuned.seen_by(["text"]).any() and not table.seen_by(["ft_text"]).any()
    later = tuned.where(np.arange(len(tuned)) >= 3).rows(splits=None)
    assert later.seen_by(["text", "ft_text"]).tolist() == [True] * 2 + [False] * (len(later) - 2)
    assert not tuned.with_features(["text"]).seen_by(["ft_text"]).any()
    assert tuned.with_features(["ft_text"]).seen_by(["ft_text"]).sum() == 5
