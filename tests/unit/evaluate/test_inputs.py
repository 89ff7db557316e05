"""An adapting model's test inputs are taken from those of every test product, not recomputed."""

import numpy as np
import pyarrow as pa
import pytest

from prodcat.evaluate.grid import inputs_of
from prodcat.train.features import FeatureTable


def _rows(ids: list[str]) -> FeatureTable:
    return FeatureTable(pa.table({"product_id": ids}), [], {}, taxonomy=None)


def test_inputs_of_takes_each_products_own_row_in_the_subsets_order():
    every = _rows(["a", "b", "c", "d"])
    features = {"text": np.arange(8.0).reshape(4, 2), "lexical": np.arange(4.0)[:, None] * 10}
    present = {"text": np.array([True, False, True, True])}
    got, got_present = inputs_of((features, present), every, _rows(["d", "b"]))
    assert got["text"].tolist() == [[6.0, 7.0], [2.0, 3.0]]
    assert got["lexical"].ravel().tolist() == [30.0, 10.0]
    assert got_present["text"].tolist() == [True, False]
    with pytest.raises(KeyError, match="1 products are not among the rows given, e.g. z"):
        inputs_of((features, present), every, _rows(["a", "z"]))
