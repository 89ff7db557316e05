"""Evaluation folds: what each protocol trains on and scores (prodcat.evaluate.folds)."""

import pytest

from prodcat.evaluate.config import EvaluateConfig
from prodcat.evaluate.folds import make_folds

pytestmark = pytest.mark.unit


def test_lopo_never_scores_the_validation_rows_that_model_selection_reads():
    config = EvaluateConfig(protocols=["in_platform_val", "transfer_val", "in_platform", "lopo"])
    folds = {f.name: f for f in make_folds(config, {}, ["a", "b", "c"])}
    selection_reads = {s for f in folds.values() if f.protocol in ("in_platform_val", "transfer_val")
                       for s in f.test_splits}
    assert selection_reads == {"val"}
    for name in ("lopo_a", "lopo_b", "lopo_c"):
        fold = folds[name]
        assert fold.train_platforms == sorted({"a", "b", "c"} - set(fold.test_platforms))
        assert set(fold.test_splits) == {"train", "calib", "test"}   # all of the platform but val
    assert folds["in_platform"].test_splits == ["test"]
