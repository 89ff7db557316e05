"""Suggested mapping tables and their review: a build refuses unreviewed suggestions, a review
names only known categories and ids, stale suggestions and bad thresholds are clear errors; the
votes behind a suggestion and their comparison with a hand mapping."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from prodcat.catalog.adapter import AdapterConfig, CategorySpec, ColumnMap
from prodcat.catalog.mapping import CategoryMapping, UnreviewedMapping
from prodcat.catalog.review import (
    MissingCategoryColumn,
    ReviewDecisions,
    ReviewError,
    StaleSuggestions,
    categories_fingerprint,
    load_decisions,
    read_unmapped,
    review_mapping,
    source_categories,
)
from prodcat.onboard.compare import compare, recommend, threshold_curve
from prodcat.onboard.suggest import CategorySuggestion, suggestion_confidence, vote
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit

ROWS = [("1", "classic boots", "Footwear", "Winter boots"), ("2", "red boots", "Footwear", "Winter boots"),
        ("3", "mini mug", "Kitchen", "Cups"), ("4", "blue shirt", "Clothing", "Tops")]


def _export(folder: Path, rows=ROWS, category_columns=("dept", "aisle")) -> Path:
    path = folder / "shop.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sku", "name", *category_columns])
        w.writerows(rows)
    return path


def _adapter(folder: Path, export: Path) -> Path:
    cfg = {"platform": "shop", "format": "csv", "path": str(export),
           "columns": {"source_id": "sku", "title": "name"},
           "category": {"columns": ["dept", "aisle"]}, "mapping": None}
    path = folder / "shop.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _suggestions(folder: Path, export: Path, adapter: Path) -> Path:
    cats = ["Footwear > Winter boots", "Kitchen > Cups", "Clothing > Tops"]
    doc = {"platform": "shop", "taxonomy": "toy-1",
           "suggested": {"platform": "shop", "adapter": str(adapter),
                         "fingerprint": categories_fingerprint(cats), "source_categories": cats},
           "mappings": {"Footwear > Winter boots": {"category_id": 3, "path": "Apparel > Shoes > Boots",
                                                    "accepted": False, "confidence": 0.9},
                        "Kitchen > Cups": {"category_id": 8, "path": "Home > Kitchen > Mugs",
                                           "accepted": False, "confidence": 0.5}},
           "excluded": {"Clothing > Tops": {"reason": "no suggestion", "accepted": False}}}
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_build_refuses_unreviewed_suggestions_and_reads_reviewed_ones(tmp_path):
    export = _export(tmp_path)
    suggestions = _suggestions(tmp_path, export, _adapter(tmp_path, export))
    with pytest.raises(UnreviewedMapping, match=r"3 of its entries are unreviewed.*catalog review"):
        CategoryMapping.load(suggestions)
    doc, counts = review_mapping(str(suggestions), ReviewDecisions(accept_above=0.8, exclude_rest="later"),
                                 toy_taxonomy())
    assert counts == {"accepted": 1, "excluded": 2, "unreviewed": 0}
    reviewed = tmp_path / "reviewed.yaml"
    reviewed.write_text(yaml.safe_dump(doc))
    mapping = CategoryMapping.load(reviewed)                 # a reviewed mapping is just a mapping
    assert mapping.resolve("Footwear > Winter boots").category_id == 3
    assert mapping.resolve("Kitchen > Cups").excluded == "later"
    assert mapping.suggested["fingerprint"] == categories_fingerprint(
        ["Footwear > Winter boots", "Kitchen > Cups", "Clothing > Tops"])


def test_a_review_sets_ids_and_keeps_the_rest_unreviewed(tmp_path):
    export = _export(tmp_path)
    suggestions = _suggestions(tmp_path, export, _adapter(tmp_path, export))
    decisions = ReviewDecisions(set={"Kitchen > Cups": 7}, exclude={"Clothing > Tops": "not sold"})
    doc, counts = review_mapping(str(suggestions), decisions, toy_taxonomy())
    assert counts == {"accepted": 1, "excluded": 1, "unreviewed": 1}
    assert doc["mappings"]["Kitchen > Cups"]["category_id"] == 7
    assert doc["mappings"]["Kitchen > Cups"]["path"] == "Home > Kitchen"
    assert doc["mappings"]["Footwear > Winter boots"]["accepted"] is False


@pytest.mark.parametrize("decisions, message", [
    (ReviewDecisions(set={"Kitchen > Cups": 999}), r"not in the taxonomy toy-1: \[999\]"),
    (ReviewDecisions(accept=["Garden > Tools"]), r"does not hold: Garden > Tools"),
    (ReviewDecisions(accept=["Kitchen > Cups"], exclude={"Kitchen > Cups": "x"}), "both maps and excludes"),
])
def test_a_review_with_unknown_categories_or_ids_is_refused(tmp_path, decisions, message):
    export = _export(tmp_path)
    suggestions = _suggestions(tmp_path, export, _adapter(tmp_path, export))
    with pytest.raises(ReviewError, match=message):
        review_mapping(str(suggestions), decisions, toy_taxonomy())


@pytest.mark.parametrize("value", [1.5, -0.2])
def test_a_threshold_outside_the_unit_interval_is_refused(value):
    with pytest.raises(ReviewError, match=r"accept_above: the confidence threshold must be in \[0, 1\]"):
        load_decisions(None, {"accept_above": value})


def test_suggestions_for_a_changed_export_are_stale(tmp_path):
    export = _export(tmp_path)
    suggestions = _suggestions(tmp_path, export, _adapter(tmp_path, export))
    _export(tmp_path, ROWS + [("5", "oak table", "Living", "Tables")])   # a new source category
    with pytest.raises(StaleSuggestions, match=r"1 new \(Living > Tables\), 0 gone"):
        review_mapping(str(suggestions), ReviewDecisions(accept_above=0.5), toy_taxonomy())


def test_an_export_without_the_category_column_is_a_clear_error(tmp_path):
    export = _export(tmp_path, [(r[0], r[1], "x", "y") for r in ROWS], category_columns=("colour", "size"))
    adapter = AdapterConfig(platform="shop", format="csv", path=str(export),
                            columns=ColumnMap(source_id="sku", title="name"),
                            category=CategorySpec(columns=["dept", "aisle"]), mapping=None)
    with pytest.raises(MissingCategoryColumn, match=r"\['dept', 'aisle'\].*columns are \['colour', 'name', "
                       r"'size', 'sku'\]"):
        read_unmapped(adapter)


def test_the_fingerprint_is_the_set_of_source_categories(tmp_path):
    export = _export(tmp_path)
    adapter = AdapterConfig(platform="shop", format="csv", path=str(export),
                            columns=ColumnMap(source_id="sku", title="name"),
                            category=CategorySpec(columns=["dept", "aisle"]), mapping=None)
    counts = source_categories(adapter)
    assert counts["Footwear > Winter boots"] == 2
    assert categories_fingerprint(counts) == categories_fingerprint(reversed(list(counts)))
    assert categories_fingerprint(counts) != categories_fingerprint(list(counts) + ["Living"])


def test_votes_rank_by_share_then_confidence():
    tax = toy_taxonomy()
    src = ["A"] * 5 + ["B"] * 2
    ids = [3, 3, 3, 4, None, 8, 9]
    conf = [0.9, 0.8, 0.7, 0.99, 0.5, 0.6, 0.9]
    out = vote(src, ids, conf, tax, top_k=3)
    a = out["A"]
    assert [c.category_id for c in a] == [3, 4]
    assert a[0].share == pytest.approx(0.75) and a[0].mean_confidence == pytest.approx(0.8)
    assert a[0].confidence == pytest.approx(suggestion_confidence(3, 4, 0.8)) == pytest.approx(0.48)
    assert a[0].path == "Apparel > Shoes > Boots"
    assert [c.category_id for c in out["B"]] == [9, 8]          # a tie in votes: the surer one first


def test_comparison_with_a_hand_mapping_counts_coverable_categories_apart():
    tax = toy_taxonomy()

    def item(src, products, ids, conf):
        s = CategorySuggestion(src, products, products)
        s.candidates = vote([src] * len(ids), ids, [conf] * len(ids), tax)[src]
        return s

    items = [item("Footwear > Boots", 10, [3, 3, 4], 0.9),      # top-1 right
             item("Footwear > Sandals", 30, [3, 3, 4], 0.9),    # top-3 right, top-1 a sibling
             item("Kitchen > Cups", 5, [9], 0.4),               # wrong
             item("Garden > Tools", 7, [9], 0.9),               # hand category not a model label
             item("Free > Gifts", 3, [9], 0.9)]                 # excluded by hand
    hand = CategoryMapping("shop", {"Footwear > Boots": 3, "Footwear > Sandals": 4, "Kitchen > Cups": 8,
                                    "Garden > Tools": 6}, {}, {"Free": "giveaways"})
    result = compare(items, hand, labels={3, 4, 5, 8, 9}, google=tax)
    assert result["counts"]["coverable"] == 3 and result["counts"]["not_coverable"] == 1
    assert result["not_coverable"][0]["source_category"] == "Garden > Tools"
    assert result["excluded"][0]["reason"] == "giveaways"
    c = result["coverable"]
    assert c["top1"] == pytest.approx(1 / 3) and c["top3"] == pytest.approx(2 / 3)
    assert c["top1_weighted"] == pytest.approx(10 / 45) and c["top3_weighted"] == pytest.approx(40 / 45)
    # strict hF: Boots for Sandals earns Apparel and Shoes; Decor for Mugs earns Home
    assert c["hP"] == pytest.approx((3 + 2 + 1) / (3 + 3 + 2))
    assert c["hR"] == pytest.approx((3 + 2 + 1) / (3 + 3 + 3))
    # confidences: Boots and Sandals 2/(3+1) x 0.9 = 0.45, Cups 1/(1+1) x 0.4 = 0.2
    rows = [r for r in result["categories"] if r["coverable"]]
    at = {p["threshold"]: p for p in threshold_curve(rows)}
    assert at[0.2]["accepted"] == 3 and at[0.2]["agreement"] == pytest.approx(1 / 3)
    assert at[0.4]["accepted"] == 2 and at[0.4]["agreement"] == pytest.approx(0.5)
    assert at[0.5]["accepted"] == 0 and at[0.5]["agreement"] is None
    assert recommend(rows, 0.5) == 0.25 and recommend(rows, 0.6) is None


def test_ranking_by_names_reorders_the_voted_candidates_only():
    from prodcat.onboard.suggest import rank

    tax = toy_taxonomy()
    item = CategorySuggestion("Footwear > Sandals", 4, 4)
    item.candidates = vote(["s"] * 4, [3, 3, 3, 4], [0.9] * 4, tax)["s"]
    item.candidates[0].name_similarity, item.candidates[1].name_similarity = 0.2, 0.7
    by_names = rank([item], "names")[0]
    assert [c.category_id for c in by_names.candidates] == [4, 3]
    assert [c.rank for c in by_names.candidates] == [1, 2]
    assert by_names.confidence == pytest.approx(suggestion_confidence(1, 4, 0.9))   # its own votes
    assert [c.category_id for c in item.candidates] == [3, 4]                       # a copy
    item.candidates[1].name_similarity = None                                       # no encoder
    assert [c.category_id for c in rank([item], "names")[0].candidates] == [3, 4]
    with pytest.raises(ValueError, match="unknown ranking"):
        rank([item], "random")


def test_each_fold_takes_its_ranking_and_threshold_from_the_other_folds():
    from prodcat.onboard.measure import choose_rankings
    from prodcat.onboard.measure import recommend as recommend_folds

    def rows(top1s, conf):
        return {"categories": [{"coverable": True, "top1": t, "confidence": conf} for t in top1s],
                "coverable": {"top1": float(np.mean(top1s))}}

    folds = {  # on the others: a sees votes 3/4 vs names 2/4; b a tie (votes); c names 5/5
        "a": {"_results": {"votes": rows([0, 0, 1], 0.5), "names": rows([1, 1, 1], 0.5)}},
        "b": {"_results": {"votes": rows([0, 1], 0.3), "names": rows([1, 1], 0.3)}},
        "c": {"_results": {"votes": rows([1, 1], 0.9), "names": rows([0, 0], 0.9)}},
    }
    choose_rankings(folds, "nested")
    assert {p: f["ranking"]["chosen"] for p, f in folds.items()} == {"a": "votes", "b": "votes",
                                                                     "c": "names"}
    assert folds["c"]["ranking"]["top1_on_others"]["names"] == pytest.approx(1.0)
    recommend_folds(folds, 0.9)
    # a (votes) from b and c under votes: conf 0.3 → [0, 1], 0.9 → [1, 1]: 0.9 needs t > 0.3
    assert folds["a"]["recommended"]["threshold"] == pytest.approx(0.35)
    assert folds["a"]["recommended"]["accepted"] == 3             # a's own: 0.5 ≥ 0.35, 1 of 3 right
    assert folds["a"]["recommended"]["agreement"] == pytest.approx(1 / 3)
    assert folds["a"]["recommended"]["chosen_on"] == ["b", "c"]
