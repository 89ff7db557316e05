"""Hierarchical metrics against hand-computed examples (toy taxonomy, see tests.fixtures.synthetic).

Toy nodes: 1 Apparel, 2 Home, 3 Shoes, 4 Shirts, 5 Kitchen, 6 Decor, 7 Boots, 8 Sandals, 9 Mugs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodcat.core.metrics import (
    class_paths,
    hierarchical_metrics,
    hierarchical_prf,
    lenient_prf,
    level_metrics,
    node_paths,
    nodes_of,
    path_consistency,
    valid_paths,
)
from prodcat.core.taxonomy import Taxonomy
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit

TOY = toy_taxonomy()
# Shoes (2) and Home (6) are labels and parents at once: virtual "the parent itself" leaves
WITH_VIRTUAL = TOY.induced([2, 3, 4, 5, 6, 8, 9])
# true / predicted nodes:      Boots vs Sandals, Shirts exact, Mugs vs Decor, Boots vs nothing
TRUE = np.array([7, 4, 9, 7])
PRED = np.array([8, 4, 6, 0])


def test_toy_node_layout():
    assert [TOY.path(n).split(" > ")[-1] for n in range(1, 10)] == [
        "Apparel", "Home", "Shoes", "Shirts", "Kitchen", "Decor", "Boots", "Sandals", "Mugs"]


def test_hierarchical_prf_hand_computed():
    # |A(t) & A(p)| = 2 + 2 + 1 + 0 = 5; sum |A(p)| = 3 + 2 + 2 + 0 = 7; sum |A(t)| = 3 + 2 + 3 + 3 = 11
    out = hierarchical_prf(TOY, TRUE, PRED)
    assert out["hP"] == pytest.approx(5 / 7)
    assert out["hR"] == pytest.approx(5 / 11)
    assert out["hF"] == pytest.approx(5 / 9)  # 2 * (5/7) * (5/11) / (5/7 + 5/11)


def test_hierarchical_prf_perfect_and_empty():
    assert hierarchical_prf(TOY, TRUE, TRUE) == {"hP": 1.0, "hR": 1.0, "hF": 1.0}
    assert hierarchical_prf(TOY, [], []) == {"hP": 0.0, "hR": 0.0, "hF": 0.0}
    assert hierarchical_prf(TOY, [7], [0]) == {"hP": 0.0, "hR": 0.0, "hF": 0.0}


def test_level_metrics_hand_computed():
    out = level_metrics(TOY, TRUE, PRED)
    # level 0: true [A, A, H, A], pred [A, A, H, none]; F1(A) = 0.8 (P 1, R 2/3), F1(H) = 1
    assert out["level0_accuracy"] == pytest.approx(3 / 4)
    assert out["level0_macro_f1"] == pytest.approx(0.9)
    # level 1: true [Shoes, Shirts, Kitchen, Shoes], pred [Shoes, Shirts, Decor, none]
    # F1: Shoes 2/3, Shirts 1, Kitchen 0, Decor 0 -> 5/12
    assert out["level1_accuracy"] == pytest.approx(1 / 2)
    assert out["level1_macro_f1"] == pytest.approx(5 / 12)
    # level 2: only Boots, Mugs, Boots reach it; predictions Sandals, none (Decor ends), none
    assert out["level2_support"] == 3
    assert out["level2_accuracy"] == 0.0
    assert out["level2_macro_f1"] == 0.0


def _virtual_taxonomy() -> Taxonomy:
    """Apparel > Shoes (a label and a parent) > Boots, Apparel > Shirts: nodes 1 Apparel, 2 Shoes,
    3 Shirts, 4 Boots, 5 virtual Shoes."""
    tax = TOY.induced([2, 3, 5])
    assert tax.virtual.tolist() == [False] * 5 + [True] and tax.label_node(2) == 5
    return tax


def test_virtual_node_counts_as_its_parent():
    tax = _virtual_taxonomy()
    true, pred = np.array([5, 5, 4, 5]), np.array([2, 4, 5, 5])
    # A(5) = A(2) = {Apparel, Shoes}: intersections 2, 2, 2, 2; |A(p)| 2, 3, 2, 2; |A(t)| 2, 2, 3, 2
    out = hierarchical_metrics(tax, true, pred)
    assert out["hP"] == pytest.approx(8 / 9)
    assert out["hR"] == pytest.approx(8 / 9)
    assert out["accuracy"] == pytest.approx(2 / 4)  # 5 vs 2 and 5 vs 5 are exact
    assert out["level1_accuracy"] == 1.0
    assert out["level2_support"] == 1 and out["level2_accuracy"] == 0.0


def test_path_consistency_hand_computed():
    rows = np.array([
        [0, 0, 0],     # Apparel > Shoes > Boots: valid
        [0, 1, -1],    # Apparel > Shirts (a leaf): valid
        [0, 1, 0],     # continues after a leaf: invalid
        [0, 0, -1],    # stops at Shoes, not a leaf: invalid
        [1, 0, 0],     # Shoes is not a child of Home: invalid
        [1, 3, -1],    # Home > Decor: valid
        [-1, -1, -1],  # nothing: invalid
    ])
    assert valid_paths(TOY, rows).tolist() == [TOY.is_valid_path(r) for r in rows.tolist()]
    assert path_consistency(TOY, rows) == pytest.approx(3 / 7)
    assert path_consistency(TOY, np.zeros((0, 3), np.int64)) == 0.0


@st.composite
def tree_and_rows(draw):
    n = draw(st.integers(2, 12))
    parent = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    tax = Taxonomy(np.arange(n), tuple(map(str, range(n))), np.array(parent), np.zeros(n, bool))
    rows = draw(st.lists(st.lists(st.integers(-1, 4), min_size=tax.num_levels,
                                  max_size=tax.num_levels), min_size=1, max_size=8))
    return tax, np.array(rows)


@settings(max_examples=60, deadline=None)
@given(tree_and_rows())
def test_valid_paths_agrees_with_taxonomy(case):
    tax, rows = case
    assert valid_paths(tax, rows).tolist() == [tax.is_valid_path(r) for r in rows.tolist()]


def test_hierarchical_metrics_keys():
    classes = np.stack([TOY.targets(n) for n in PRED])  # node 0 -> all -1: invalid
    out = hierarchical_metrics(TOY, TRUE, PRED, classes)
    assert out["n"] == 4 and out["accuracy"] == pytest.approx(1 / 4)
    assert out["path_consistency"] == pytest.approx(3 / 4)  # Sandals, Shirts, Decor are leaves
    assert {"hP", "hR", "hF", "level0_accuracy", "level2_macro_f1"} <= set(out)


def test_nodes_of_inverts_targets():
    nodes = np.arange(len(TOY))
    assert nodes_of(TOY, np.stack([TOY.targets(n) for n in nodes])).tolist() == nodes.tolist()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="equal length"):
        hierarchical_prf(TOY, [1, 2], [1])
    with pytest.raises(ValueError, match="taxonomy nodes"):
        level_metrics(TOY, [10], [1])
    with pytest.raises(ValueError, match="level_classes"):
        path_consistency(TOY, [[0, 0]])


# ---------------------------------------------------------------------- strict: the output path
def _classes(tax: Taxonomy, nodes_per_level: list[int]) -> list[int]:
    """Per-level classes of a (possibly invalid) sequence of nodes, one per level, -1 padded."""
    out = [-1] * tax.num_levels
    for level, node in enumerate(nodes_per_level):
        out[level] = int(tax.class_index[node])
    return out


def test_an_invalid_path_loses_credit_for_its_wrong_nodes():
    """[Home, Shoes, Boots] for a boot: the lenient reading (deepest node with its ancestors)
    gives full credit; the output path earns 2 of 3 nodes."""
    classes = np.array([_classes(TOY, [2, 3, 7])])          # Home > Shoes > Boots: invalid
    assert not valid_paths(TOY, classes)[0]
    strict = hierarchical_prf(TOY, [7], classes)
    assert strict == pytest.approx({"hP": 2 / 3, "hR": 2 / 3, "hF": 2 / 3})
    assert lenient_prf(TOY, [7], classes)["hF"] == 1.0
    out = hierarchical_metrics(TOY, np.array([7]), nodes_of(TOY, classes), classes)
    assert out["hF"] == pytest.approx(2 / 3) and out["hF_lenient"] == 1.0 and out["accuracy"] == 0.0
    assert out["level0_accuracy"] == 0.0 and out["level2_accuracy"] == 1.0


def test_valid_paths_score_the_same_as_classes_or_nodes():
    classes = np.stack([TOY.targets(int(n)) if n else np.full(TOY.num_levels, -1) for n in PRED])
    assert hierarchical_prf(TOY, TRUE, classes) == pytest.approx(hierarchical_prf(TOY, TRUE, PRED))
    assert class_paths(TOY, classes).tolist() == node_paths(TOY, PRED).tolist()


# Kitchen (7) is a label and a parent (of Mugs): "Kitchen itself" is a virtual leaf at level 2
WITH_KITCHEN = TOY.induced([2, 3, 7, 8])


def _class_of(tax: Taxonomy, node: int) -> int:
    return int(tax.class_index[node])


def _virtual_child(tax: Taxonomy, category_id: int) -> int:
    return tax.label_node(category_id)     # "X itself", the leaf a product labelled X trains on


def test_x_itself_under_a_wrong_parent_is_scored_as_x():
    """The hole the review found: ``[Apparel, Shoes, Kitchen itself]`` for a Shoes product was
    read as ``[Apparel, Shoes]`` (hF 1, accuracy 1); it outputs Kitchen, a wrong node."""
    tax = WITH_KITCHEN
    shoes, kitchen = tax.node(2), tax.node(7)
    classes = np.array([[_class_of(tax, tax.node(1)), _class_of(tax, shoes),
                         _class_of(tax, _virtual_child(tax, 7))]])
    assert class_paths(tax, classes).tolist() == [[tax.node(1), shoes, kitchen]]
    true = np.array([tax.label_node(2)])                        # a product labelled Shoes
    assert hierarchical_prf(tax, true, classes) == pytest.approx({"hP": 2 / 3, "hR": 1.0, "hF": 0.8})
    assert hierarchical_metrics(tax, true, nodes_of(tax, classes), classes)["accuracy"] == 0.0
    # "Kitchen itself" under Kitchen is the valid path of a Kitchen product: exact, nothing added
    valid = np.array([[_class_of(tax, tax.node(6)), _class_of(tax, kitchen),
                       _class_of(tax, _virtual_child(tax, 7))]])
    assert class_paths(tax, valid).tolist() == [[tax.node(6), kitchen, -1]]
    assert hierarchical_prf(tax, [tax.label_node(7)], valid) == {"hP": 1.0, "hR": 1.0, "hF": 1.0}
    # X itself under a wrong parent still earns X when X is on the true path: [Home, Kitchen,
    # Shoes itself] for the Shoes product outputs {Home, Kitchen, Shoes}; T = {Apparel, Shoes}
    odd = np.array([[_class_of(tax, tax.node(6)), _class_of(tax, kitchen),
                     _class_of(tax, _virtual_child(tax, 2))]])
    assert class_paths(tax, odd).tolist() == [[tax.node(6), kitchen, shoes]]
    assert hierarchical_prf(tax, true, odd) == pytest.approx({"hP": 1 / 3, "hR": 1 / 2, "hF": 0.4})


def _path_labels(tax: Taxonomy, rows) -> np.ndarray:
    """HiClass label arrays built from the taxonomy's path strings, independently of
    :func:`class_paths`: each output node's full ``A > B`` path ("X itself" reads as X's path)."""
    return np.array(rows, dtype=object)


def _true_labels(tax: Taxonomy, nodes) -> list[list[str]]:
    out = []
    for node in nodes:
        row = [tax.path(int(n)) for n in tax.path_nodes(int(node))]
        out.append(row + [""] * (tax.num_levels - len(row)))
    return out


def _output_labels(tax: Taxonomy, classes) -> list[list[str]]:
    return [["" if c < 0 else tax.path(int(tax.level_nodes[level][c])) for level, c in enumerate(row)]
            for row in np.asarray(classes)]


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_matches_hiclass_on_random_paths_of_different_depths(seed):
    """The micro hP/hR/hF of HiClass (hiclass.metrics, on per-level label arrays with "" padding)
    equal ours on random true leaves and random, often invalid, per-level outputs that stop at
    random depths, many ending in a virtual "X itself" class under any parent. HiClass reads
    labels built from the taxonomy's path strings (a node is its full path; "X itself" reads as
    X's path), not prodcat's own output paths."""
    from hiclass import metrics as hiclass_metrics

    rng = np.random.default_rng(seed)
    tax = (TOY, WITH_VIRTUAL, WITH_KITCHEN)[seed % 3]
    leaves = tax.leaves
    n = int(rng.integers(1, 30))
    true = rng.choice(leaves, n)
    classes = np.full((n, tax.num_levels), -1)
    virtual_classes = {level: [i for i, node in enumerate(nodes) if tax.virtual[node]]
                       for level, nodes in enumerate(tax.level_nodes)}
    for i in range(n):
        depth = int(rng.integers(1, tax.num_levels + 1))
        for level in range(depth):
            classes[i, level] = rng.integers(0, tax.level_sizes[level])
        if virtual_classes.get(depth - 1) and rng.random() < 0.5:   # end in some "X itself"
            classes[i, depth - 1] = rng.choice(virtual_classes[depth - 1])
    t = _path_labels(tax, _true_labels(tax, true))
    p = _path_labels(tax, _output_labels(tax, classes))
    ours = hierarchical_prf(tax, true, classes)
    if not (p != "").any():
        assert ours["hP"] == 0.0
        return
    assert ours["hP"] == pytest.approx(hiclass_metrics.precision(t, p))
    assert ours["hR"] == pytest.approx(hiclass_metrics.recall(t, p))
    assert ours["hF"] == pytest.approx(hiclass_metrics.f1(t, p, zero_division=0.0))
