"""What `prodcat onboard adapt` reports of co-training (``self_train.views: cross``), from a
model adapted without Ray (the synthetic case of tests/unit/models/test_decision.py)."""

from __future__ import annotations

import pytest

from prodcat.onboard.adapt import _summary, markdown
from tests.unit.models.test_decision import _co_training_case

pytestmark = pytest.mark.unit


def test_the_report_names_each_co_trained_regression_and_what_labelled_it():
    model, feats, _, _ = _co_training_case()
    adapted = model.adapt(feats)
    summary = _summary(adapted, "ckpt", "products.parquet", "target", 800, 800, 0, new_platform_products=800)
    st = summary["self_training"]
    assert st["added"] and set(st["views"]) == {"self_trained_text", "self_trained_image"}
    fits = [c.settings["fitted_on"] for c in adapted.self_trained_components]
    assert st["features"] == ["text", "image"] and max(fits) <= st["fitted_on"] <= sum(fits)  # either view
    assert st["views"]["self_trained_text"] == {
        "features": ["text"], "taught_by": ["image"],
        "fitted_on": next(c for c in adapted.self_trained_components
                          if c.name == "self_trained_text").settings["fitted_on"]}
    text = markdown(summary)
    assert "Co-training (`views: cross`) on 800 products of platform `target`" in text
    assert "- `self_trained_text` on text: fitted on" in text and "labelled by image" in text
    assert "labelled by lt_text, text" in text
    joint = markdown(_summary(model.as_trained(), "ckpt", "p", None, 1, 1, 0, 0))
    assert "Co-training" not in joint
