"""Suggestions against a hand-made mapping: how a new platform's suggested mapping would have fared.

Per source category the hand mapping gives the Google category (truncated to the catalogue's
``max_depth``, as a build does), or an exclusion. A category is *coverable* when that Google
category is a label of the model that made the suggestions (a model never suggests a category it
has no head for: those are counted apart and listed). Over the coverable categories:

- top-1 / top-3 agreement: the hand category is the first / among the first three suggestions,
  per category and weighted by the category's products;
- strict hF of the first suggestion against the hand category (:mod:`prodcat.core.metrics`, node
  sets, on the Google taxonomy): partial credit for a near miss ("Shoes" for "Boots");
- agreement against a confidence threshold: the categories whose suggestion confidence reaches
  the threshold (accepted without a look) and their top-1 agreement, for every threshold on a grid.

Letters: N source categories.
"""

from __future__ import annotations

import numpy as np

from prodcat.catalog.mapping import CategoryMapping
from prodcat.core.metrics import hierarchical_prf
from prodcat.core.report import figure, save_png
from prodcat.core.taxonomy import Taxonomy

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))


def compare(items, hand: CategoryMapping, labels: set[int], google: Taxonomy,
            max_depth: int | None = 4) -> dict:
    """Compare :class:`prodcat.onboard.suggest.CategorySuggestion` s with a hand mapping.

    Args:
        labels: the Google category ids the suggesting model can output (its label leaves).

    Returns:
        JSON-ready: ``categories`` (one row each), ``counts``, ``coverable`` metrics, ``curve``
        (per threshold: ``accepted``, ``share``, ``agreement``), ``not_coverable`` and ``excluded``
        lists.
    """
    rows = []
    for item in items:
        res = hand.resolve(item.source_category)
        hand_id = google.truncate(res.category_id, max_depth) if res.category_id is not None else None
        ids = [c.category_id for c in item.candidates]
        rows.append({
            "source_category": item.source_category, "products": item.products, "scored": item.scored,
            "hand_id": hand_id, "hand_path": google.path_of_id(hand_id) if hand_id is not None else None,
            "excluded": res.excluded, "unmapped": res.unmapped,
            "coverable": hand_id is not None and hand_id in labels,
            "suggested_id": ids[0] if ids else None,
            "suggested_path": item.candidates[0].path if ids else None,
            "confidence": item.confidence, "top1": bool(ids) and ids[0] == hand_id,
            "top3": hand_id in ids[:3]})
    cov = [r for r in rows if r["coverable"]]
    out = {"categories": rows, "counts": {
        "source_categories": len(rows), "coverable": len(cov),
        "not_coverable": sum(1 for r in rows if r["hand_id"] is not None and not r["coverable"]),
        "excluded_by_hand": sum(1 for r in rows if r["excluded"]),
        "unmapped_by_hand": sum(1 for r in rows if r["unmapped"]),
        "products": int(sum(r["products"] for r in rows)),
        "coverable_products": int(sum(r["products"] for r in cov))},
        "coverable": agreement(cov, google),
        "curve": threshold_curve(cov),
        "not_coverable": [{"source_category": r["source_category"], "hand_path": r["hand_path"],
                           "products": r["products"]} for r in rows
                          if r["hand_id"] is not None and not r["coverable"]],
        "excluded": [{"source_category": r["source_category"], "reason": r["excluded"]}
                     for r in rows if r["excluded"]]}
    return out


def agreement(rows: list[dict], google: Taxonomy) -> dict:
    """Top-1 / top-3 agreement per category and product-weighted, and the strict hF of the first
    suggestion against the hand category, over ``rows`` (coverable categories)."""
    if not rows:
        return {"categories": 0}
    w = np.asarray([r["products"] for r in rows], np.float64)
    top1 = np.asarray([r["top1"] for r in rows], bool)
    top3 = np.asarray([r["top3"] for r in rows], bool)
    true = [google.node(r["hand_id"]) for r in rows]
    pred = [google.node(r["suggested_id"]) if r["suggested_id"] in google else 0 for r in rows]
    return {"categories": len(rows), "products": int(w.sum()),
            "top1": float(top1.mean()), "top3": float(top3.mean()),
            "top1_weighted": float((w * top1).sum() / w.sum()),
            "top3_weighted": float((w * top3).sum() / w.sum()),
            **{k: float(v) for k, v in hierarchical_prf(google, true, pred).items()}}


def threshold_curve(rows: list[dict], thresholds=THRESHOLDS) -> list[dict]:
    """Per threshold t: the coverable categories whose suggestion confidence is at least t
    (``accepted``, their ``share`` of all), and their top-1 ``agreement`` (None when none)."""
    conf = np.asarray([r["confidence"] for r in rows], np.float64)
    right = np.asarray([r["top1"] for r in rows], bool)
    out = []
    for t in thresholds:
        kept = conf >= t
        out.append({"threshold": float(t), "accepted": int(kept.sum()),
                    "share": float(kept.mean()) if len(kept) else 0.0,
                    "agreement": float(right[kept].mean()) if kept.any() else None})
    return out


def recommend(rows: list[dict], goal: float, thresholds=THRESHOLDS) -> float | None:
    """The smallest threshold whose accepted categories (of ``rows``) agree with the hand mapping
    at least ``goal`` of the time (None when none does)."""
    for point in threshold_curve(rows, thresholds):
        if point["accepted"] and point["agreement"] is not None and point["agreement"] >= goal - 1e-12:
            return point["threshold"]
    return None


def at_threshold(rows: list[dict], threshold: float | None) -> dict:
    """The accepted categories' share and agreement at ``threshold`` (None: nothing accepted)."""
    if threshold is None or not rows:
        return {"threshold": threshold, "accepted": 0, "share": 0.0, "agreement": None}
    return {**threshold_curve(rows, [threshold])[0]}


def plot_agreement(curves: dict[str, list[dict]], uri: str, marks: dict[str, float | None] | None = None) -> None:
    """PNG: per platform, the share of coverable source categories accepted at a confidence
    threshold (x) against their top-1 agreement with the hand mapping (y), thresholds annotated;
    ``marks``: a recommended threshold per platform, drawn as a larger dot."""
    fig, axes = figure(1, 1, figsize=(7.5, 5))
    ax = axes
    for name, points in curves.items():
        pts = [p for p in points if p["agreement"] is not None]
        line = ax.plot([100 * p["share"] for p in pts], [100 * p["agreement"] for p in pts], "o-",
                       markersize=3, label=name)[0]
        for p in pts[::4]:
            ax.annotate(f"{p['threshold']:.2f}", (100 * p["share"], 100 * p["agreement"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color=line.get_color())
        t = (marks or {}).get(name)
        hit = next((p for p in pts if abs(p["threshold"] - (t if t is not None else -1)) < 1e-9), None)
        if hit:
            ax.scatter([100 * hit["share"]], [100 * hit["agreement"]], s=80, color=line.get_color(),
                       edgecolor="black", zorder=3)
    ax.set(xlabel="source categories accepted automatically (% of coverable)",
           ylabel="their top-1 agreement with the hand mapping (%)",
           title="suggestion confidence threshold: coverage against agreement\n(labels: thresholds; "
                 "big dot: the threshold recommended from the other platforms)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, uri, dpi=120)
