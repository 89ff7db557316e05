"""Taxonomy on hand-made trees: levels, masks, targets, virtual leaves, JSON, errors."""

import numpy as np
import pytest

from prodcat.core.taxonomy import Taxonomy
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit


def test_levels_parents_and_masks():
    tx = toy_taxonomy()
    assert tx.num_levels == 3
    assert tx.level_sizes == [2, 4, 3]            # Apparel, Home | Shoes, Shirts, Kitchen, Decor | Boots, Sandals, Mugs
    assert tx.path_of_id(3) == "Apparel > Shoes > Boots"
    assert tx.id_for_path("Home > Kitchen > Mugs") == 8
    mask = tx.child_masks[0]                        # [C_0, C_1]
    apparel, home = tx.class_index[tx.node(1)], tx.class_index[tx.node(6)]
    assert mask[apparel].sum() == 2 and mask[home].sum() == 2
    assert not (mask[apparel] & mask[home]).any()
    # Shirts (depth 2) is a leaf: its row in the level-2 mask is all False
    assert not tx.child_masks[1][tx.class_index[tx.node(5)]].any()


def test_targets_pad_below_shallow_leaves_and_decode_back():
    tx = toy_taxonomy()
    shirts = tx.node(5)
    t = tx.targets(shirts)
    assert t[2] == -1 and t[0] >= 0 and t[1] >= 0
    assert tx.decode(t) == shirts
    assert tx.is_valid_path(t)
    boots = tx.node(3)
    assert tx.decode(tx.targets(boots)) == boots
    assert not tx.is_valid_path([t[0], t[1], 0])   # nothing lies below a leaf


def test_decode_rejects_non_child():
    tx = toy_taxonomy()
    home = tx.class_index[tx.node(6)]
    shoes = tx.class_index[tx.node(2)]
    with pytest.raises(ValueError):
        tx.decode([home, shoes])
    assert not tx.is_valid_path([home, shoes, -1])
    assert not tx.is_valid_path([tx.class_index[tx.node(1)], -1, -1])  # stops at an inner node


def test_induced_subtree_adds_virtual_leaf_for_inner_labels():
    full = toy_taxonomy()
    sub = full.induced([2, 3, 5])            # Shoes is a label and the parent of Boots
    assert sorted(int(i) for i in sub.ids[~sub.virtual][1:]) == [1, 2, 3, 5]
    virtual = sub.label_node(2)
    assert sub.virtual[virtual] and sub.parent[virtual] == sub.node(2)
    assert sub.path(virtual) == "Apparel > Shoes"
    assert sub.label_node(3) == sub.node(3)
    assert set(sub.leaves.tolist()) == {virtual, sub.node(3), sub.node(5)}
    assert sub.is_valid_path(sub.targets(virtual))


def test_truncation_to_max_depth():
    full = toy_taxonomy()
    assert full.truncate(3, 2) == 2
    assert full.truncate(5, 2) == 5
    sub = full.induced([3, 8], max_depth=2)
    assert sub.num_levels == 2
    assert 3 not in sub and 2 in sub and 7 in sub


def test_json_round_trip_keeps_everything():
    sub = toy_taxonomy().induced([2, 3, 9])
    back = Taxonomy.from_json(sub.to_json())
    assert back.version == sub.version
    assert np.array_equal(back.ids, sub.ids) and np.array_equal(back.parent, sub.parent)
    assert np.array_equal(back.virtual, sub.virtual) and back.names == sub.names
    assert all(np.array_equal(a, b) for a, b in zip(back.child_masks, sub.child_masks))


@pytest.mark.parametrize("items, message", [
    ([(1, "A"), (2, "A > B > C")], "parent"),
    ([(1, "A"), (1, "B")], "twice"),
    ([(0, "A")], "reserved"),
])
def test_bad_trees_raise(items, message):
    with pytest.raises(ValueError, match=message):
        Taxonomy.from_paths(items)


def test_unknown_ids_and_paths_raise_key_error():
    tx = toy_taxonomy()
    with pytest.raises(KeyError, match="999"):
        tx.node(999)
    with pytest.raises(KeyError):
        tx.id_for_path("Apparel > Hats")
    assert 999 not in tx and 3 in tx


def test_google_taxonomy_parses(shared):
    from prodcat.core.taxonomy import load_google_taxonomy

    tx = load_google_taxonomy()
    assert tx.version == "google-2021-09-21"
    assert tx.level_sizes[0] == 21 and tx.num_levels == 7
    assert tx.path_of_id(187) == "Apparel & Accessories > Shoes"
