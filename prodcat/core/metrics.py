"""Hierarchical classification metrics over taxonomy nodes (numpy in, floats out): the one hF.

A prediction is scored on the path the model *outputs*, level by level. Inputs are the true label
nodes (``true_nodes``: int ``[B]``) and the prediction either as per-level classes
(``level_classes``: int ``[B, L]``, -1 padded: what a hierarchical model outputs, possibly an
invalid path) or as nodes (``pred_nodes``: int ``[B]``, node 0 = no prediction: a flat model's
leaf, whose path is the node and its ancestors, valid by construction). Both are turned into
*output paths*, int ``[B, L]``: the real node output at each level (:func:`class_paths`,
:func:`node_paths`). An invalid path such as ``[Home & Garden, Shoes, Boots]`` for a boot thus
earns two of its three nodes, not the full credit its deepest node's ancestors would give
(:func:`lenient_prf` keeps that older, lenient reading for comparison only).

A virtual node (a category that is both a label and a parent, see ``prodcat.core.taxonomy``) counts as
its parent category: its ancestor set is its parent's, so the duplicated category is not counted
twice, and "Shoes" predicted for a product labelled "Shoes" (virtual leaf) is exact. Output under a
wrong parent (``[Apparel, Shoes, Kitchen itself]``), "X itself" is scored as what it is, the
category X: a predicted node that earns credit only when X is on the true path. The predicted and
true node *sets* are compared, as HiClass does with full-path labels (a test checks this against
``hiclass.metrics`` on labels built from the taxonomy's path strings).

Sources: hierarchical precision / recall / F1 of Kiritchenko et al. (2005), "Functional annotation
of genes using hierarchical text categorization", micro-averaged over products as in HiClass
(``hiclass.metrics.precision`` etc.); macro-F1 from scikit-learn's ``f1_score``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from sklearn.metrics import f1_score

from prodcat.core.taxonomy import Taxonomy


@lru_cache(maxsize=8)
def real_paths(taxonomy: Taxonomy) -> np.ndarray:
    """int ``[N, L]`` (read-only): per node, its ancestors by level (itself included, root
    excluded, virtual nodes left out, so a virtual node's row equals its parent's); -1 padded."""
    paths = np.full((len(taxonomy), max(taxonomy.num_levels, 1)), -1, np.int64)
    for node in range(1, len(taxonomy)):
        real = [n for n in taxonomy.path_nodes(node) if not taxonomy.virtual[n]]
        paths[node, :len(real)] = real
    paths.setflags(write=False)
    return paths


def node_paths(taxonomy: Taxonomy, nodes) -> np.ndarray:
    """int ``[B, L]``: the path of each node (itself and its real ancestors by level, -1 padded):
    the output path of a flat model that predicts ``nodes``."""
    return real_paths(taxonomy)[np.asarray(nodes, np.int64)]


def class_paths(taxonomy: Taxonomy, level_classes) -> np.ndarray:
    """int ``[B, L]``: the real node a model output at each level, from its per-level classes
    (``[B, L]``, -1 padded). Rows need not be valid paths.

    A virtual node ("X itself") is scored as what it is, the category X: under its own parent
    (the node output one level up is X) it adds no node (-1), as in :func:`real_paths`; under any
    other parent (an invalid path such as ``[Apparel, Shoes, Kitchen itself]``) it outputs X, held
    in its own column, so X counts as a predicted node that earns credit only when X is on the
    true path (:func:`hierarchical_counts` compares node sets, as HiClass does).

    Raises:
        ValueError: when ``level_classes`` is not ``[B, L]`` or holds a class out of range.
    """
    classes = np.asarray(level_classes, np.int64)
    if classes.ndim != 2 or classes.shape[1] != taxonomy.num_levels:
        raise ValueError(f"level_classes must be [B, L={taxonomy.num_levels}], got {classes.shape}")
    out = np.full(classes.shape, -1, np.int64)
    for level, level_nodes in enumerate(taxonomy.level_nodes):
        cls = classes[:, level]
        if (cls >= len(level_nodes)).any():
            raise ValueError(f"level {level} has {len(level_nodes)} classes; got {cls.max()}")
        node = level_nodes[cls.clip(0, None)] if len(level_nodes) else np.zeros_like(cls)
        virtual = taxonomy.virtual[node]
        above = out[:, level - 1] if level else np.full(len(cls), -1, np.int64)
        category = np.where(virtual, taxonomy.parent[node], node)   # X for "X itself"
        duplicate = virtual & (category == above)                   # X itself under X: no new node
        out[:, level] = np.where((cls >= 0) & ~duplicate, category, -1)
    return out


def _output_paths(taxonomy: Taxonomy, true_nodes, pred) -> tuple[np.ndarray, np.ndarray]:
    """``(true paths, predicted paths)``, both ``[B, L]``; ``pred`` is nodes ``[B]`` or level
    classes ``[B, L]``."""
    pred = np.asarray(pred, np.int64)
    if pred.ndim == 2:
        if len(pred) != len(np.asarray(true_nodes)):
            raise ValueError(f"{len(np.asarray(true_nodes))} true nodes but {len(pred)} predicted paths")
        true_nodes, _ = _check_nodes(taxonomy, true_nodes, np.zeros(len(pred), np.int64))
        return node_paths(taxonomy, true_nodes), class_paths(taxonomy, pred)
    true_nodes, pred = _check_nodes(taxonomy, true_nodes, pred)
    return node_paths(taxonomy, true_nodes), node_paths(taxonomy, pred)


def _check_nodes(taxonomy: Taxonomy, true_nodes, pred_nodes) -> tuple[np.ndarray, np.ndarray]:
    true_nodes, pred_nodes = np.asarray(true_nodes, np.int64), np.asarray(pred_nodes, np.int64)
    if true_nodes.ndim != 1 or true_nodes.shape != pred_nodes.shape:
        raise ValueError(f"true_nodes and pred_nodes must be 1-D of equal length, got "
                         f"{true_nodes.shape} and {pred_nodes.shape}")
    for name, nodes in (("true_nodes", true_nodes), ("pred_nodes", pred_nodes)):
        if nodes.size and (nodes.min() < 0 or nodes.max() >= len(taxonomy)):
            raise ValueError(f"{name} must be taxonomy nodes in [0, {len(taxonomy)})")
    return true_nodes, pred_nodes


def hierarchical_counts(taxonomy: Taxonomy, true_nodes, pred) -> np.ndarray:
    """Per product ``[|T & P|, |P|, |T|]``: int ``[B, 3]``, with T the true path's nodes and P the
    nodes the prediction output (at most one per level, see :func:`class_paths`): the sets'
    intersection, as in HiClass. Summed over any subset of products (a split, a
    platform, the products a cascade escalates, a bootstrap resample) they give that subset's
    micro-averaged scores through :func:`prf_from_counts`.

    Args:
        true_nodes: int ``[B]`` label nodes.
        pred: int ``[B]`` predicted nodes (a valid path each) or ``[B, L]`` per-level classes.

    Raises:
        ValueError: on mismatched shapes or nodes/classes outside the taxonomy.
    """
    t, p = _output_paths(taxonomy, true_nodes, pred)  # [B, L] each
    # node sets: an output node is shared when it is anywhere on the true path (a real node sits
    # in its own level's column; "X itself" under a wrong parent holds X one column deeper)
    common = ((p[:, :, None] == t[:, None, :]) & (p[:, :, None] >= 0)).any(axis=2).sum(axis=1)
    return np.stack([common, (p >= 0).sum(axis=1), (t >= 0).sum(axis=1)], axis=1).astype(np.int64)


def prf_from_counts(common, n_pred, n_true) -> dict:
    """``{"hP", "hR", "hF"}`` (fractions in [0, 1]) from summed :func:`hierarchical_counts`;
    each 0.0 when its denominator is 0. Scalars give floats; arrays (e.g. ``[K]`` cumulative sums
    along a cascade curve) give arrays, element by element."""
    common, n_pred, n_true = (np.asarray(x, np.float64) for x in (common, n_pred, n_true))
    with np.errstate(invalid="ignore", divide="ignore"):
        h_p = np.where(n_pred > 0, common / n_pred, 0.0)
        h_r = np.where(n_true > 0, common / n_true, 0.0)
        h_f = np.where(h_p + h_r > 0, 2 * h_p * h_r / (h_p + h_r), 0.0)
    if h_f.ndim == 0:
        return {"hP": float(h_p), "hR": float(h_r), "hF": float(h_f)}
    return {"hP": h_p, "hR": h_r, "hF": h_f}


def hierarchical_prf(taxonomy: Taxonomy, true_nodes, pred) -> dict[str, float]:
    """Micro-averaged hierarchical precision, recall and F1 (Kiritchenko et al.): the one hF.

    With T the true path's nodes (root excluded, virtual = parent) and P the nodes the prediction
    output level by level: ``hP = sum |T & P| / sum |P|``, ``hR = sum |T & P| / sum |T|``,
    ``hF = 2 hP hR / (hP + hR)``; each 0.0 when its denominator is 0. For a valid path P is the
    predicted node and its ancestors, as in HiClass (``hiclass.metrics.f1``, micro), which a test
    checks this against.

    Args:
        true_nodes: int ``[B]`` taxonomy nodes.
        pred: int ``[B]`` nodes (0 = no prediction: empty set) or ``[B, L]`` per-level classes.

    Raises:
        ValueError: on mismatched shapes or nodes outside the taxonomy.
    """
    return prf_from_counts(*hierarchical_counts(taxonomy, true_nodes, pred).sum(axis=0))


def lenient_prf(taxonomy: Taxonomy, true_nodes, level_classes) -> dict[str, float]:
    """hP/hR/hF of only the deepest output node with its own ancestors, ignoring what the model
    output above it: the lenient reading that forgives invalid paths, kept to show how much it
    flattered models without masking. Never the headline figure."""
    return hierarchical_prf(taxonomy, true_nodes, nodes_of(taxonomy, level_classes))


def level_metrics(taxonomy: Taxonomy, true_nodes, pred) -> dict[str, float]:
    """Per level l: accuracy and macro-F1 over the products whose true path reaches level l.

    The predicted class at level l is the node the prediction output there (``pred``: nodes
    ``[B]`` or per-level classes ``[B, L]``; "none" when it output nothing there, always wrong). Macro-F1 is scikit-learn's
    ``f1_score(average="macro", zero_division=0)`` over the real categories seen (true or
    predicted) at that level, "none" excluded.

    Returns:
        ``{"level<l>_accuracy", "level<l>_macro_f1", "level<l>_support"}`` for every level
        (0.0 and support 0 for a level no product reaches).

    Raises:
        ValueError: on mismatched shapes or nodes outside the taxonomy.
    """
    t, p = _output_paths(taxonomy, true_nodes, pred)  # [B, L]
    out: dict[str, float] = {}
    for level in range(taxonomy.num_levels):
        rows = t[:, level] >= 0
        y_true, y_pred = t[rows, level], p[rows, level]
        labels = np.setdiff1d(np.union1d(y_true, y_pred), [-1])
        out[f"level{level}_accuracy"] = float((y_true == y_pred).mean()) if rows.any() else 0.0
        out[f"level{level}_macro_f1"] = float(f1_score(
            y_true, y_pred, labels=labels, average="macro", zero_division=0)) if rows.any() else 0.0
        out[f"level{level}_support"] = int(rows.sum())
    return out


def valid_paths(taxonomy: Taxonomy, level_classes) -> np.ndarray:
    """bool ``[B]``: rows of ``level_classes`` (int ``[B, L]``) that are a parent→child chain from
    level 0 to a leaf, then only -1 (the vectorised ``Taxonomy.is_valid_path``).

    Raises:
        ValueError: when ``level_classes`` is not ``[B, L]``.
    """
    classes = np.asarray(level_classes, np.int64)
    if classes.ndim != 2 or classes.shape[1] != taxonomy.num_levels:
        raise ValueError(f"level_classes must be [B, L={taxonomy.num_levels}], got {classes.shape}")
    sizes = taxonomy.level_sizes
    ok = (classes[:, 0] >= 0) & (classes[:, 0] < sizes[0])
    ended = np.zeros(len(classes), bool)  # the path reached a leaf above this level
    for level, mask in enumerate(taxonomy.child_masks, start=1):
        parent, cls = classes[:, level - 1].clip(0, sizes[level - 1] - 1), classes[:, level]
        ended |= ~mask[parent].any(axis=1)
        in_range = (cls >= 0) & (cls < sizes[level])
        is_child = in_range & mask[parent, cls.clip(0, sizes[level] - 1)]
        ok &= np.where(ended, cls == -1, is_child)
    return ok


def nodes_of(taxonomy: Taxonomy, level_classes) -> np.ndarray:
    """int ``[B]``: the node of the deepest class of each row of ``level_classes`` (int
    ``[B, L]``, -1 padded), e.g. true nodes from training targets; 0 for an all -1 row.

    Raises:
        ValueError: when ``level_classes`` is not ``[B, L]``.
    """
    classes = np.asarray(level_classes, np.int64)
    if classes.ndim != 2 or classes.shape[1] != taxonomy.num_levels:
        raise ValueError(f"level_classes must be [B, L={taxonomy.num_levels}], got {classes.shape}")
    nodes = np.zeros(len(classes), np.int64)
    for level, level_nodes in enumerate(taxonomy.level_nodes):
        cls = classes[:, level]
        nodes = np.where(cls >= 0, level_nodes[cls.clip(0, len(level_nodes) - 1)], nodes)
    return nodes


def path_consistency(taxonomy: Taxonomy, level_classes) -> float:
    """Fraction in [0, 1] of predicted paths that are valid (see :func:`valid_paths`); 0.0 when
    empty."""
    valid = valid_paths(taxonomy, level_classes)
    return float(valid.mean()) if len(valid) else 0.0


def hierarchical_metrics(taxonomy: Taxonomy, true_nodes, pred_nodes,
                         level_classes=None) -> dict[str, float]:
    """All metrics in one flat dict (for ``metrics.json`` and ``ray.train.report``), scored on
    the output path: ``level_classes`` (int ``[B, L]``) when given, else ``pred_nodes``.

    Keys: ``n``; ``accuracy`` (the whole output path equals the true one); ``hP``, ``hR``, ``hF``;
    the :func:`level_metrics` keys; with ``level_classes`` also ``path_consistency`` and
    ``hF_lenient`` (:func:`lenient_prf`, for comparison).

    Raises:
        ValueError: on mismatched shapes or nodes outside the taxonomy.
    """
    pred = pred_nodes if level_classes is None else level_classes
    t, p = _output_paths(taxonomy, true_nodes, pred)
    exact = (t == p).all(axis=1) & (t[:, 0] >= 0)
    out: dict[str, float] = {"n": int(len(t)), "accuracy": float(exact.mean()) if len(exact) else 0.0}
    out.update(hierarchical_prf(taxonomy, true_nodes, pred))
    out.update(level_metrics(taxonomy, true_nodes, pred))
    if level_classes is not None:
        out["path_consistency"] = path_consistency(taxonomy, level_classes)
        out["hF_lenient"] = lenient_prf(taxonomy, true_nodes, level_classes)["hF"]
    return out
