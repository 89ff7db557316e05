"""prodcat.onboard.choose's rule: the paired rule of prodcat train, and no switch on a handful of
groups (two products right for a candidate give a bootstrap interval of [+100, +100])."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.onboard.choose import MIN_GROUPS, draw_groups, pick

pytestmark = pytest.mark.unit

RIGHT, WRONG = [3, 3, 3], [1, 3, 3]          # common, predicted, true ancestor counts


def _counts(right: np.ndarray) -> np.ndarray:
    return np.where(right[:, None], [RIGHT], [WRONG]).astype(float)


@pytest.mark.parametrize("differing", [2, MIN_GROUPS - 1, MIN_GROUPS, 12])
def test_a_candidate_replaces_the_reference_only_on_enough_groups(differing):
    n = differing                                  # labels drawn where they disagree: all differ
    groups = np.arange(n)
    reference = np.zeros(n, bool)                  # the candidate is right where the reference is not
    chosen, diffs = pick({"default": _counts(reference), "other": _counts(np.ones(n, bool))}, groups,
                         "default", n_resamples=200)
    d = diffs["other"]
    assert d["groups_differing"] == differing and d["low"] > 0       # ahead in every resample
    assert chosen == ("other" if differing >= MIN_GROUPS else "default")
    assert d.get("too_few", False) == (differing < MIN_GROUPS)


def test_groups_are_drawn_whole_within_the_pool_and_at_least_one():
    groups = np.repeat(np.arange(10), 3)           # 10 groups of 3
    pool = groups >= 4
    mask = draw_groups(groups, pool, 7, seed=0)
    assert mask.sum() == 6 and not (mask & ~pool).any()
    assert all(mask[groups == g].all() or not mask[groups == g].any() for g in range(10))
    assert draw_groups(groups, pool, 2, seed=0).sum() == 3            # one group, though larger than asked
    assert (draw_groups(groups, pool, None, seed=0) == pool).all()


def test_a_labels_file_is_read_by_product_id_and_bad_ones_are_refused(tmp_path):
    from prodcat.onboard.choose import Predictions, _labels_file

    ids = np.asarray(["b:1", "b:2", "b:3"], object)
    pred = Predictions(ids, ids, np.asarray(["train"] * 3), np.asarray([7, 8, 9]), ids, {}, {}, {})
    good = tmp_path / "labels.csv"
    good.write_text("product_id,category_id,note\nb:3,42,x\nb:1,,skipped\n")
    mask, category = _labels_file(str(good), pred)
    assert mask.tolist() == [False, False, True] and category[2] == 42
    for text, message in [("product_id,label\nb:1,4\n", "no column 'category_id'"),
                          ("product_id,category_id\nb:1,Shoes\n", "must be a Google category id"),
                          ("product_id,category_id\nz:9,4\n", "1 product id\\(s\\) not of the new platform")]:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(ValueError, match=message):
            _labels_file(str(tmp_path / "bad.csv"), pred)
    (tmp_path / "bad.csv").write_text("product_id,category_id\nb:1,4\nb:1,5\n")
    with pytest.raises(ValueError, match="labelled both 4 and 5"):
        _labels_file(str(tmp_path / "bad.csv"), pred)
    (tmp_path / "bad.csv").write_text("product_id,category_id\nb:1,4\nb:2,99999\n")
    with pytest.raises(ValueError, match="1 category id\\(s\\) not in the taxonomy, e.g. 99999"):
        _labels_file(str(tmp_path / "bad.csv"), pred, known={4, 42})
    with pytest.raises(FileNotFoundError):
        _labels_file(str(tmp_path / "missing.csv"), pred)
