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


def _table_with_tuned(n: int = 30):
    import numpy as np

    products, taxonomy = synthetic_products(n)
    store, _ = synthetic_store(products, taxonomy, dims={"text": 4})
    table = FeatureTable(join_features(products, store, ["text"], taxonomy), ["text"], {"text": 4},
                         taxonomy)
    ids = table.column("product_id").astype(str)
    return table.add_feature("ft_text", np.ones((len(table), 2), np.float32), trained_on=ids[:6],
                             version="outer"), ids


def test_a_feature_variant_is_read_by_its_platforms_held_out_set_only():
    """add_variant(feature, Q, ...): for_heldout(Q) swaps the vectors (by product id, whatever the
    row order), their presence, trained-on products and version; another platform's view and the
    table itself keep the fold's version; row selections keep the variant, replacing the feature
    drops it."""
    import numpy as np

    table, ids = _table_with_tuned()
    some = ids[::-1][: len(ids) - 4]                     # reversed order, 4 rows not embedded
    x = np.stack([np.full(2, 10.0 + i, np.float32) for i in range(len(some))])
    present = np.ones(len(some), bool)
    present[0] = False                                   # embedded but failed
    varied = table.add_variant("ft_text", "alpha", some, x, present, trained_on=some[-3:], version="inner")
    assert varied.variants["ft_text"]["alpha"].version == "inner" and table.variants == {}

    view = varied.for_heldout("alpha").rows(splits=None)
    feats, has, _ = view.arrays()
    value = dict(zip(some.tolist(), x[:, 0].tolist()))
    for pid, row, ok in zip(view.column("product_id").astype(str), feats["ft_text"], has["ft_text"]):
        if pid in value and pid != some[0]:
            assert ok and row[0] == value[pid]
        else:                                            # not embedded, or failed: absent
            assert not ok and row[0] == 0.0
    assert view.variants == {} and view.versions["ft_text"] == "inner"
    assert sorted(view.column("product_id")[view.seen_by(["ft_text"])].astype(str)) == sorted(some[-3:])

    for other in (varied.for_heldout("beta"), varied.without_variants(), varied):
        f, h, _ = other.arrays()
        assert h["ft_text"].all() and (f["ft_text"] == 1.0).all() and other.versions["ft_text"] == "outer"
        assert other.seen_by(["ft_text"]).sum() == 6
    kept = varied.where(np.arange(len(varied)) % 2 == 0)
    assert kept.for_heldout("alpha").arrays()[0]["ft_text"][:, 0].max() >= 10.0
    assert varied.with_features(["text"]).variants == {}
    assert varied.add_feature("ft_text", np.zeros((len(varied), 2), np.float32)).variants == {}
    with pytest.raises(ValueError, match="must be"):
        table.add_variant("ft_text", "alpha", some, x[:, :1], present, None)
    with pytest.raises(KeyError, match="not loaded"):
        table.add_variant("image", "alpha", some, x, present, None)


def test_the_cross_platform_set_of_a_platform_reads_the_variant_made_without_it():
    """heldout_sets: the cross-platform set of Q is fitted on and predicts the variant made without
    Q, and leaves out only what that variant's encoder learnt (not the fold encoder's products);
    the in-platform set reads the fold's version and leaves those out; the fitted components'
    cache tells the two versions apart."""
    import numpy as np

    from prodcat.models.config import DecisionSettings
    from prodcat.train.config import TrainConfig
    from prodcat.train.decision import ComponentSpec, Fitter, heldout_sets

    table, ids = _table_with_tuned(60)
    platform = dict(zip(ids, table.column("platform")))
    outer = set(ids[:6].tolist())
    settings = DecisionSettings(heldout=["cross_platform", "in_platform"], heldout_per_platform=1000)
    train = table.rows(splits=["train"])

    def sets(t):
        return {s.name: s for s in heldout_sets(t, t.rows(splits=["train"]), settings, "val", 0, ["ft_text"])}

    plain = sets(table)
    x = np.full((len(ids), 2), 5.0, np.float32)
    inner = [p for p in ids if platform[p] == "beta"][:2]       # what the encoder without alpha learnt
    varied = table.add_variant("ft_text", "alpha", ids, x, np.ones(len(ids), bool), inner, "no-alpha")
    nested = sets(varied)
    alpha, beta = nested["cross_platform:alpha"], nested["cross_platform:beta"]
    for part in (alpha.fit, alpha.rows):
        assert (part.arrays()[0]["ft_text"] == 5.0).all() and part.versions["ft_text"] == "no-alpha"
    for part in (beta.fit, beta.rows, nested["in_platform"].rows):
        assert (part.arrays()[0]["ft_text"] == 1.0).all() and part.versions["ft_text"] == "outer"
    alpha_rows = set(alpha.rows.column("product_id").astype(str).tolist())
    trained_alpha = {p for p in train.column("product_id").astype(str) if platform[p] == "alpha"}
    assert alpha_rows == trained_alpha and alpha_rows & outer    # the fold encoder's products stay
    assert not set(plain["cross_platform:alpha"].rows.column("product_id").astype(str)) & outer
    assert not set(nested["in_platform"].rows.column("product_id").astype(str)) & outer
    assert nested["in_platform"].fit.variants == {}

    fitter = Fitter(TrainConfig(), table.taxonomy)
    spec = ComponentSpec("ft_text", "linear", "ft_text", [{"C": 1.0}])
    same_rows = varied.where(np.isin(varied.column("product_id"), alpha.fit.column("product_id")))
    assert len(same_rows) == len(alpha.fit)                        # same products, the fold's version
    assert fitter._key(spec, {"C": 1.0}, alpha.fit) != fitter._key(spec, {"C": 1.0}, same_rows)


def test_a_replaced_feature_records_its_own_encoder_in_the_manifest():
    """add_feature(name, version=...) replaces the store's manifest entry of ``name`` (the encoder
    of the vectors it replaces) by the new version, or drops it without one, so a checkpoint
    trained on the table records the encoder of the vectors it read (an evaluation's per-fold
    fine-tuned ``ft_text`` once carried the run encoder's fingerprint from the store)."""
    import numpy as np

    products, taxonomy = synthetic_products(12)
    store, _ = synthetic_store(products, taxonomy, dims={"text": 4, "ft_text": 2})
    manifest = {"features": {"text": {"fingerprint": {"key": "frozen"}, "config": {"kind": "hf"}},
                             "ft_text": {"fingerprint": {"key": "run"}, "config": {"kind": "hf"}}},
                "run": "r1"}
    table = FeatureTable(join_features(products, store, ["text", "ft_text"], taxonomy),
                         ["text", "ft_text"], {"text": 4, "ft_text": 2}, taxonomy, manifest)
    x = np.ones((len(table), 2), np.float32)
    tuned = table.add_feature("ft_text", x, version="fold")
    assert tuned.manifest["features"] == {"text": manifest["features"]["text"],
                                          "ft_text": {"fingerprint": {"key": "fold"}}}
    assert tuned.manifest["run"] == "r1" and table.manifest["features"]["ft_text"]["fingerprint"]["key"] == "run"
    assert "ft_text" not in table.add_feature("ft_text", x).manifest["features"]
