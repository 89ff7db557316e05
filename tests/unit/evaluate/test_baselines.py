"""The TF-IDF + linear baseline and the evaluation report (Markdown and PNG plots). No Ray."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.core.metrics import path_consistency
from prodcat.evaluate.baselines import TfidfBaseline, TfidfConfig, node_classes, product_texts
from prodcat.evaluate.report import per_category_f1, results_markdown, write_report
from tests.fixtures.synthetic import synthetic_products, toy_taxonomy

pytestmark = pytest.mark.unit


def _data(n: int = 120):
    table, taxonomy = synthetic_products(n)
    nodes = np.array([taxonomy.label_node(c) for c in table["category_id"].to_pylist()])
    return table, taxonomy, nodes


def test_tfidf_learns_category_words_and_gives_valid_paths():
    table, taxonomy, nodes = _data()
    texts = product_texts(table)
    model = TfidfBaseline(TfidfConfig(min_df=1)).fit(texts[:80], nodes[:80])
    pred = model.predict(texts[80:])
    assert (pred == nodes[80:]).mean() > 0.95  # the category name is in every synthetic title
    classes = node_classes(taxonomy, pred)
    assert classes.shape == (40, taxonomy.num_levels)
    assert path_consistency(taxonomy, classes) == 1.0
    assert model.fit_seconds > 0


def test_tfidf_unigrams_and_null_descriptions():
    table, taxonomy, nodes = _data(60)
    table = table.set_column(table.schema.get_field_index("description"), "description",
                             __import__("pyarrow").nulls(len(table), "string"))
    texts = product_texts(table)
    assert all(" . " in t for t in texts)
    model = TfidfBaseline(TfidfConfig(min_df=1, ngram_max=1)).fit(texts, nodes)
    assert model.predict(["premium boots"]).shape == (1,)
    assert model.predict([]).shape == (0,)


def test_tfidf_errors_say_what_is_wrong():
    with pytest.raises(RuntimeError, match="fit"):
        TfidfBaseline().predict(["x"])
    with pytest.raises(ValueError, match="2 distinct"):
        TfidfBaseline().fit(["a", "b"], [3, 3])
    with pytest.raises(ValueError, match="labels"):
        TfidfBaseline().fit(["a", "b"], [3])


def _results():
    rows = []
    for fold in ("in_platform", "lopo_alpha"):
        for model, kind, hf in (("late/hard/text", "grid", 0.7), ("late/hard/text+image", "grid", 0.8),
                                ("tfidf-linear", "baseline", 0.75)):
            rows.append({"fold": fold, "protocol": fold.split("_")[0], "model": model, "kind": kind,
                         "modality": model.split("/")[-1], "fusion": "late", "masking": "hard",
                         "hF": hf, "hP": hf, "hR": hf, "level0_macro_f1": 0.9, "level1_macro_f1": 0.5,
                         "path_consistency": 1.0, "accuracy": 0.6, "n": 10, "epochs": 3,
                         "seconds_per_epoch": 1.5, "peak_memory_mb": 900.0,
                         "per_platform_hF": {"alpha": hf}, "hF_ci": [hf - 0.05, hf + 0.05]})
    folds = [{"fold": "in_platform", "protocol": "in_platform", "train_platforms": ["alpha", "beta"],
              "test_platforms": ["alpha", "beta"], "test_splits": ["test"], "n_train": 100,
              "n_test_all": 10, "n_test": 10, "coverage": 1.0, "test_categories": 5, "covered_categories": 5},
             {"fold": "lopo_alpha", "protocol": "lopo", "train_platforms": ["beta"],
              "test_platforms": ["alpha"], "test_splits": None, "n_train": 50, "n_test_all": 12,
              "n_test": 10, "coverage": 10 / 12, "test_categories": 5, "covered_categories": 4}]
    comparisons = [{"fold": "lopo_alpha", "model": "late/hard/text+image", "reference": "tfidf-linear",
                    "difference": 0.05, "low": 0.01, "high": 0.09, "real": True,
                    "verdict": "late/hard/text+image beats tfidf-linear: +5.00 points [+1.00, +9.00]"}]
    return {"folds": folds, "results": rows, "seconds": 12.0, "comparisons": comparisons,
            "dataset": {"products": "p", "embeddings": "e", "features": ["image", "text"], "rows": 110,
                        "platforms": ["alpha", "beta"], "taxonomy_version": "toy-1"}}


def test_markdown_report_has_coverage_pivot_and_tables():
    md = results_markdown(_results())
    assert "| lopo_alpha | beta | alpha (all splits) | 50 | 10 / 12 | 83.3% | 4 / 5 | - |" in md
    assert "| late/hard/text+image | 0.800 [0.750, 0.850] | 0.800 [0.750, 0.850] |" in md  # the pivot
    assert "| lopo_alpha | late/hard/text+image | +5.00 | [+1.00, +9.00] | late/hard/text+image beats tfidf-linear |" in md
    assert "Highest hF in this fold: **late/hard/text+image**" in md and "not a choice" in md
    assert "L1 macro-F1" in md


def test_write_report_writes_json_markdown_and_pngs(tmp_path):
    taxonomy = toy_taxonomy()
    true = np.array([7, 4, 9, 7, 8, 6, 4, 9, 5, 8])
    classes = node_classes(taxonomy, true)
    preds = {"in_platform": {"true": true, "taxonomy": taxonomy, "models": {
        "late/hard/text": classes, "late/hard/text+image": np.roll(classes, 1, axis=0),
        "tfidf-linear": classes}}}
    written = write_report(_results(), preds, str(tmp_path))
    for name in ("results.json", "report.md", "hf_by_model.png", "per_category_f1_in_platform.png",
                 "confusion_level0_in_platform.png", "confusion_level1_in_platform.png"):
        assert name in written and (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "hf_by_model.png").read_bytes()[:4] == b"\x89PNG"
    assert "![hf_by_model.png](hf_by_model.png)" in (tmp_path / "report.md").read_text()


def test_per_category_f1_counts_virtual_leaf_as_its_category():
    taxonomy = toy_taxonomy().induced([2, 3, 4, 5])  # "Shoes" (2) is a label and a parent
    virtual = int(np.flatnonzero(taxonomy.virtual)[0])
    parent = int(taxonomy.parent[virtual])
    other = taxonomy.node(5)
    scores = per_category_f1(taxonomy, np.array([virtual, other]), np.array([parent, other]))
    assert all(f1 == 1.0 for f1, _ in scores.values())
