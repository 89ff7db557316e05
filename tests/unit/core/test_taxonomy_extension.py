"""Taxonomy versions: extending with new child nodes (ids never Google's), old nodes untouched,
the JSON round trip with the lineage, mapping ids of an earlier version, and the errors."""

import numpy as np
import pytest

from prodcat.core.metrics import hierarchical_prf
from prodcat.core.taxonomy import EXTENSION_ID_BASE, Taxonomy, load_google_taxonomy
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit


def test_extend_appends_children_and_keeps_every_old_node_as_it_was():
    old = toy_taxonomy()
    new = old.extend([(5, "Polo"), (5, "Tee"), (3, "Ankle boots")])
    n = len(old)
    assert np.array_equal(new.ids[:n], old.ids) and new.names[:n] == old.names
    assert np.array_equal(new.parent[:n], old.parent) and np.array_equal(new.class_index[:n], old.class_index)
    added = [int(c) for c in new.ids[n:] if not new.virtual[n:][list(new.ids[n:]).index(c)]]
    assert added == [EXTENSION_ID_BASE, EXTENSION_ID_BASE + 1, EXTENSION_ID_BASE + 2]
    assert new.path_of_id(EXTENSION_ID_BASE) == "Apparel > Shirts > Polo"
    assert new.path_of_id(EXTENSION_ID_BASE + 2) == "Apparel > Shoes > Boots > Ankle boots"
    assert new.num_levels == 4 and new.level_sizes[:3] >= old.level_sizes[:3]
    # former leaves stay labels: their products and predictions land on a virtual "itself" leaf
    for former_leaf in (5, 3):
        leaf = new.label_node(former_leaf)
        assert new.virtual[leaf] and new.path(leaf) == old.path_of_id(former_leaf)
        assert new.is_valid_path(new.targets(leaf))
    assert new.version.startswith("toy-1+ext-") and new.version != old.extend([(5, "Polo")]).version
    # "Shirts" under the new version scores as "Shirts" (virtual = parent) in the one hF
    assert hierarchical_prf(new, [new.label_node(5)], [new.node(5)])["hF"] == 1.0


def test_extension_ids_never_collide_with_google_ids():
    google = load_google_taxonomy()
    assert int(google.ids.max()) < EXTENSION_ID_BASE
    shoes = google.id_for_path("Apparel & Accessories > Shoes")
    extended = google.extend([(shoes, "Sneakers (recategorized)")])
    new_id = int(extended.ids[len(google)])
    assert new_id >= EXTENSION_ID_BASE and new_id not in set(google.ids.tolist())
    again = extended.extend([(new_id, "High tops")])
    assert int(again.ids[len(extended)]) == new_id + 1       # next ids continue above the last


def test_json_round_trip_keeps_the_lineage_and_maps_old_ids():
    old = toy_taxonomy()
    v2 = old.extend([(5, "Polo")], version="toy-2")
    v3 = v2.extend([(EXTENSION_ID_BASE, "Pique polo")], version="toy-3")
    back = Taxonomy.from_json(v3.to_json())
    assert back.version == "toy-3" and set(back.lineage) == {"toy-1", "toy-2"}
    assert np.array_equal(back.ids, v3.ids) and np.array_equal(back.virtual, v3.virtual)
    assert back.map_from("toy-1", [5, 3]).tolist() == [5, 3]
    assert back.map_from("toy-2", [EXTENSION_ID_BASE]).tolist() == [EXTENSION_ID_BASE]
    assert back.map_from("toy-3", [EXTENSION_ID_BASE + 1]).tolist() == [EXTENSION_ID_BASE + 1]
    with pytest.raises(KeyError, match="not in taxonomy version toy-1"):
        back.map_from("toy-1", [EXTENSION_ID_BASE])            # toy-1 had no such category
    with pytest.raises(KeyError, match="does not descend"):
        back.map_from("google-2021-09-21", [5])
    assert "lineage" not in old.to_json()                       # plain taxonomies are unchanged


def test_extend_rejects_bad_children():
    tx = toy_taxonomy()
    with pytest.raises(ValueError, match="already has a child"):
        tx.extend([(2, "boots")])                               # Shoes > Boots exists (any case)
    with pytest.raises(ValueError, match="already has a child"):
        tx.extend([(5, "Polo"), (5, "polo")])
    with pytest.raises(ValueError, match="must not contain"):
        tx.extend([(5, "A > B")])
    with pytest.raises(ValueError, match="non-empty"):
        tx.extend([(5, "  ")])
    with pytest.raises(KeyError):
        tx.extend([(424242, "X")])
    with pytest.raises(ValueError, match="at least one"):
        tx.extend([])
