"""The reference rows and the evaluation report (Markdown and PNG plots). No Ray."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.evaluate.predictions import node_classes
from prodcat.evaluate.references import reference_models
from prodcat.evaluate.report import per_category_f1, results_markdown, write_report
from prodcat.models.lexical import product_texts
from tests.fixtures.synthetic import synthetic_products, toy_taxonomy

pytestmark = pytest.mark.unit


def test_reference_rows_follow_the_models_features():
    from prodcat.train.config import TrainConfig

    train = TrainConfig.model_validate({"model": {"fusion": "decision", "modalities": ["text", "lexical"]}})
    refs = reference_models(train, {"mm": {"model.modalities": ["text", "image", "lexical"]}},
                            ["tfidf", "logreg", "tfidf+logreg-text"], [{"analyzer": "word+char", "C": 0.5}])
    assert list(refs) == ["tfidf", "logreg-text", "logreg-image", "tfidf+logreg-text"]
    assert refs["tfidf"]["model.modalities"] == ["lexical"]
    assert refs["tfidf+logreg-text"]["model.modalities"] == ["lexical", "text"]
    for overrides in refs.values():     # flat, equal weights, tuned lexical grid, no label prior
        assert overrides["model.decision.combiner"] == "equal"
        assert overrides["model.decision.decodings"] == ["best_path"]
        assert overrides["model.decision.lexical_grid"] == [{"analyzer": "word+char", "C": 0.5}]
    alone = reference_models(train, {}, ["logreg"], [])
    assert list(alone) == ["logreg-text"] and alone["logreg-text"]["model.modalities"] == ["text"]
    adapted = reference_models(train, {}, ["tfidf", "tfidf-adapt"], [])
    assert adapted["tfidf"]["model.decision.priors"] == ["none"]
    assert adapted["tfidf-adapt"]["model.decision.priors"] == ["adapt"]     # always, not chosen
    assert adapted["tfidf-adapt"]["model.modalities"] == ["lexical"]


def test_product_texts_with_null_descriptions():
    table, _ = synthetic_products(6)
    table = table.set_column(table.schema.get_field_index("description"), "description",
                             __import__("pyarrow").nulls(len(table), "string"))
    assert all(t.endswith(" . ") for t in product_texts(table))


def _results():
    rows = []
    for fold in ("in_platform", "lopo_alpha"):
        for model, kind, hf in (("late/hard/text", "grid", 0.7), ("late/hard/text+image", "grid", 0.8),
                                ("tfidf", "reference", 0.75)):
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
    comparisons = [{"fold": "lopo_alpha", "model": "late/hard/text+image", "reference": "tfidf",
                    "difference": 0.05, "low": 0.01, "high": 0.09, "real": True,
                    "verdict": "late/hard/text+image beats tfidf: +5.00 points [+1.00, +9.00]"}]
    return {"folds": folds, "results": rows, "seconds": 12.0, "comparisons": comparisons,
            "dataset": {"products": "p", "embeddings": "e", "features": ["image", "text"], "rows": 110,
                        "platforms": ["alpha", "beta"], "taxonomy_version": "toy-1"}}


def test_markdown_report_has_coverage_pivot_and_tables():
    md = results_markdown(_results())
    assert "| lopo_alpha | beta | alpha (all splits) | 50 | 10 / 12 | 83.3% | 4 / 5 | - |" in md
    assert "| late/hard/text+image | 0.800 [0.750, 0.850] | 0.800 [0.750, 0.850] |" in md  # the pivot
    assert "| lopo_alpha | late/hard/text+image | +5.00 | [+1.00, +9.00] | late/hard/text+image beats |" in md
    assert "Highest hF in this fold: **late/hard/text+image**" in md and "not a choice" in md
    assert "L1 macro-F1" in md


def test_write_report_writes_json_markdown_and_pngs(tmp_path):
    taxonomy = toy_taxonomy()
    true = np.array([7, 4, 9, 7, 8, 6, 4, 9, 5, 8])
    classes = node_classes(taxonomy, true)
    preds = {"in_platform": {"true": true, "taxonomy": taxonomy, "models": {
        "late/hard/text": classes, "late/hard/text+image": np.roll(classes, 1, axis=0),
        "tfidf": classes}}}
    written = write_report(_results(), preds, str(tmp_path))
    for name in ("results.json", "report.md", "hf_by_model.png", "per_category_f1_in_platform.png",
                 "confusion_level0_in_platform.png", "confusion_level1_in_platform.png"):
        assert name in written and (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "hf_by_model.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("fold,protocol,model,kind,seed,n,hF,hF_low,hF_high") and len(lines) == 7
    assert "lopo_alpha,late/hard/text+image,tfidf,,0.05,0.01,0.09,True" in (tmp_path / "comparisons.csv").read_text()
    assert "![hf_by_model.png](hf_by_model.png)" in (tmp_path / "report.md").read_text()


def test_per_category_f1_counts_virtual_leaf_as_its_category():
    taxonomy = toy_taxonomy().induced([2, 3, 4, 5])  # "Shoes" (2) is a label and a parent
    virtual = int(np.flatnonzero(taxonomy.virtual)[0])
    parent = int(taxonomy.parent[virtual])
    other = taxonomy.node(5)
    scores = per_category_f1(taxonomy, np.array([virtual, other]), np.array([parent, other]))
    assert all(f1 == 1.0 for f1, _ in scores.values())
