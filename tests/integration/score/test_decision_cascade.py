"""The decision-level default through every consumer: a tiny cascade of two decision-level fusion
checkpoints (text + lexical, text + image + lexical) fitted by `prodcat cascade fit`, scored in
bulk (rows in = rows out), exported self-contained, and answered by the stage runner the service
uses."""

from __future__ import annotations

import hashlib

import pytest

from prodcat.score import ScoreConfig, score
from prodcat.score.parts import read_predictions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    from tests.fixtures.cascade import build_tiny_cascade

    return build_tiny_cascade(tmp_path_factory.mktemp("dcascade"), kind="decision")


def test_decision_checkpoints_fit_score_export_and_serve(ray_session, cascade, tmp_path):
    from prodcat.cascade.bundle import export_cascade
    from prodcat.cascade.spec import read_cascade
    from prodcat.cascade.stage import StageRunner
    from prodcat.cli import main
    from prodcat.models.checkpoint import load_checkpoint
    from prodcat.models.decision import DecisionModel

    text = load_checkpoint(cascade["text_model"])
    assert isinstance(text, DecisionModel) and set(text.features) <= {"text", "lexical"}
    fit = tmp_path / "fit"
    assert main(["cascade", "fit", "--text-model", cascade["text_model"],
                 "--multimodal-model", cascade["multimodal_model"],
                 "--products", cascade["products_uri"], "--embeddings", cascade["embeddings"],
                 "--output", str(fit), "--goal", "max_escalation=1.0",
                 "--set", "cost_sample=8", "--set", "cost_batch_size=8",
                 "--set", "calib_split=train"]) == 0
    spec = read_cascade(str(fit))
    assert spec.text_temperature > 0 and (fit / "text_model" / "components.safetensors").exists()
    assert "ece_test" in spec.validation
    out = tmp_path / "pred"
    summary = score(ScoreConfig(model=str(fit), input=cascade["products_uri"], output=str(out),
                                text_batch_size=16, multimodal_batch_size=8, text_num_cpus=0.5,
                                multimodal_num_cpus=0.5))
    table = read_predictions(str(out))
    assert table.num_rows == cascade["products"].num_rows == summary["rows"]
    version = hashlib.sha256((fit / "text_model" / "components.safetensors").read_bytes()).hexdigest()[:12]
    assert version in set(table["model_version"].to_pylist())
    exported = export_cascade(str(fit), str(tmp_path / "bundle"))
    assert exported["files"] > 0 and (tmp_path / "bundle" / "multimodal_model" / "lexical.json").exists()
    runner = StageRunner(str(tmp_path / "bundle" / "multimodal_model"), "multimodal", device="cpu")
    product = cascade["products"].to_pylist()[0]
    answer = runner.predict_items([{"title": product["title"], "description": product["description"]}])[0]
    assert "error" not in answer and answer["path"] and 0.0 <= answer["confidence"] <= 1.0
