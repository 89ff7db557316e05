"""Evaluation folds: what each protocol trains on and scores (prodcat.evaluate.folds), and which
validation scores may choose a model for which test fold (prodcat.evaluate.report.nested_scores)."""

import pytest

from prodcat.evaluate.config import EvaluateConfig
from prodcat.evaluate.folds import adapt_rows, make_folds
from prodcat.evaluate.report import nested_scores

pytestmark = pytest.mark.unit


def test_selection_protocols_read_no_test_rows_of_the_fold_they_choose_for():
    config = EvaluateConfig(protocols=["in_platform_val", "transfer_val", "in_platform", "lopo"])
    folds = {f.name: f for f in make_folds(config, {}, ["a", "b", "c"])}
    # in-platform: the choice scores the calibration split (early stopping and decision-level
    # fusion's weights read val), the test fold scores test
    assert folds["in_platform_val"].test_splits == ["calib"]
    assert folds["in_platform"].test_splits == ["test"]
    pairs = [f for f in folds.values() if f.protocol == "transfer_val"]
    assert len(pairs) == 6 and all(f.test_splits == ["val"] for f in pairs)
    for name in ("lopo_a", "lopo_b", "lopo_c"):
        fold = folds[name]
        held_out = fold.test_platforms[0]
        assert fold.train_platforms == sorted({"a", "b", "c"} - {held_out})
        assert set(fold.test_splits) == {"train", "calib", "test"}   # all of the platform but val


def test_nested_scores_for_a_fold_use_only_pairs_without_its_platform():
    folds = [{"fold": f"val_{a}_to_{b}", "protocol": "transfer_val", "train_platforms": [a],
              "test_platforms": [b]} for a in "abc" for b in "abc" if a != b]
    # pairs that touch platform c score 0; the others 1: nested_c must be exactly 1
    rows = [{"fold": f["fold"], "model": "m", "hF": 0.0 if "c" in f["fold"] else 1.0} for f in folds]
    rows.append({"fold": "in_platform_val", "model": "m", "hF": 0.5})
    scores = nested_scores({"folds": folds, "results": rows})["m"]
    assert scores["nested_c"] == 1.0 and scores["nested_a"] == 0.0 and scores["nested_b"] == 0.0
    assert scores["in_platform_val"] == 0.5 and "nested_mean" not in scores


class _Rows:
    """A stand-in for FeatureTable that records which rows were asked for."""

    def rows(self, splits=None, platforms=None):
        return {"splits": None if splits is None else sorted(splits), "platforms": platforms}


@pytest.mark.parametrize("pool", ["platform", "split"])
def test_what_a_fold_adapts_to(pool):
    config = EvaluateConfig(protocols=["in_platform_val", "transfer_val", "in_platform", "lopo"], adapt_pool=pool)
    folds = {f.name: f for f in make_folds(config, {}, ["a", "b", "c"])}
    pair = adapt_rows(_Rows(), folds["val_a_to_b"], config)
    # platform: the scored platform's every split but the in-platform test split, as a LOPO fold
    # adapts to its whole held-out platform; split: only what the pair scores
    assert pair == {"splits": ["calib", "train", "val"] if pool == "platform" else ["val"], "platforms": ["b"]}
    # the other folds adapt to what they score, whatever the pool
    assert adapt_rows(_Rows(), folds["in_platform_val"], config) == {"splits": ["calib"], "platforms": ["a", "b", "c"]}
    assert adapt_rows(_Rows(), folds["in_platform"], config) == {"splits": ["test"], "platforms": ["a", "b", "c"]}
    assert adapt_rows(_Rows(), folds["lopo_c"], config) == {"splits": ["calib", "test", "train"], "platforms": ["c"]}
