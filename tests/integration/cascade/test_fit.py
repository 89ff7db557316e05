"""`prodcat cascade fit` on a tiny real cascade's catalogue and store: the spec, the report and
the curve (no Ray needed)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    from tests.fixtures.cascade import build_tiny_cascade

    return build_tiny_cascade(tmp_path_factory.mktemp("cascade"))


def test_cascade_fit_writes_spec_report_and_curve(cascade, tmp_path):
    """`prodcat cascade fit` on the tiny cascade's catalogue and store (no Ray needed)."""
    from prodcat.cascade.spec import read_cascade
    from prodcat.cli import main

    out = tmp_path / "fit"
    assert main(["cascade", "fit", "--text-model", cascade["text_model"],
                 "--multimodal-model", cascade["multimodal_model"],
                 "--products", cascade["products_uri"], "--embeddings", cascade["embeddings"],
                 "--output", str(out), "--goal", "hf_within=0.5",
                 "--set", "cost_sample=16", "--set", "cost_batch_size=8",
                 "--set", "calib_split=train"]) == 0   # the synthetic calib split is tiny
    spec = read_cascade(str(out))
    assert spec.text_temperature > 0 and spec.multimodal_temperature > 0
    v = spec.validation
    assert v["calib"]["hF"] >= v["endpoints"]["train"]["multimodal_only_hF"] - 0.005 - 1e-9
    assert v["cost_ms"]["text"] > 0 and v["cost_ms"]["multimodal"] > 0
    report = json.loads((out / "cascade_report.json").read_text())
    assert report["curves"]["test"]["escalation_rate"][-1] == 1.0
    assert (out / "cascade_curve.png").stat().st_size > 1000
    assert "tau =" in (out / "cascade_report.md").read_text()
