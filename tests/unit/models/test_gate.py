"""The self-training gate (prodcat.models.gate, ``model.decision.self_train.gate``): which of a
new platform's products look like the label space, and self-training that learns from those only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from prodcat.models.components import component_kinds
from prodcat.models.config import ModelConfig, SelfTrainSettings
from prodcat.models.decision import Combiner, DecisionModel, load_decision
from prodcat.models.gate import LabelSpaceGate
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit

TAX = toy_taxonomy().induced([2, 3, 4, 5, 6, 8, 9])
LEAVES = np.sort(TAX.leaves)


def test_the_centroid_gate_passes_the_label_space_and_rejects_an_unseen_category():
    """Leaf centroids of the training embeddings; the threshold rejects ``quantile`` of the
    in-space reference products; products of a direction no leaf has fail, absent ones pass."""
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(len(LEAVES), 32))
    nodes = rng.choice(LEAVES, 500)
    x = protos[np.searchsorted(LEAVES, nodes)] + 0.4 * rng.normal(size=(500, 32))
    reference = protos[rng.integers(0, len(LEAVES), 1000)] + 0.4 * rng.normal(size=(1000, 32))
    gate = LabelSpaceGate.fit("text", x, nodes, reference, quantile=0.1)
    assert gate.centroids.shape == (len(LEAVES), 32) and gate.reference == 1000
    assert 0.85 <= gate.inside(reference).mean() <= 0.95                # the quantile it was set at
    fresh = protos[rng.integers(0, len(LEAVES), 300)] + 0.4 * rng.normal(size=(300, 32))
    assert gate.inside(fresh).mean() > 0.8
    unseen = 3.0 * rng.normal(size=(1, 32)) + 0.4 * rng.normal(size=(300, 32))   # another category
    assert gate.inside(unseen).mean() < 0.05
    assert gate.inside(unseen, present=np.zeros(300, bool)).all()          # nothing to judge by
    again = LabelSpaceGate.from_record(gate.record(), gate.centroids)
    assert np.array_equal(again.inside(unseen), gate.inside(unseen))
    with pytest.raises(ValueError, match=r"expected \[B, 32\]"):
        gate.scores(x[:, :8])
    with pytest.raises(ValueError, match="in-space held-out products"):
        LabelSpaceGate.fit("text", x, nodes, reference[:0])
    with pytest.raises(ValueError, match="gate_quantile"):
        LabelSpaceGate.fit("text", x, nodes, reference, quantile=1.0)


def _open_set_case(seed: int = 0):
    """A source platform over every leaf; a target platform whose first 300 products are of
    categories the source never had (text and image from directions of their own), and whose last
    300 are in the label space."""
    rng = np.random.default_rng(seed)
    text_protos, image_protos = rng.normal(size=(len(LEAVES), 16)), rng.normal(size=(len(LEAVES), 8))
    source = rng.integers(0, len(LEAVES), 400)
    x_text = text_protos[source] + 0.3 * rng.normal(size=(400, 16))
    x_image = image_protos[source] + 0.3 * rng.normal(size=(400, 8))
    text = component_kinds.get("linear").fit("text", "text", x_text, LEAVES[source], TAX, C=10.0)
    image = component_kinds.get("linear").fit("image", "image", x_image, LEAVES[source], TAX, C=10.0)
    held = rng.integers(0, len(LEAVES), 300)
    gate = LabelSpaceGate.fit("text", x_text, LEAVES[source],
                              text_protos[held] + 0.3 * rng.normal(size=(300, 16)), quantile=0.05)
    config = ModelConfig(fusion="decision", modalities=["text", "image"],
                         decision={"self_train": SelfTrainSettings(gate="centroid").model_dump()})
    model = DecisionModel(components=[text, image], combiner=Combiner({"text": 1.0, "image": 1.0}),
                          taxonomy=TAX, model_config=config, input_dims={"text": 16, "image": 8}, gate=gate)
    unseen_text, unseen_image = 4.0 * rng.normal(size=(3, 16)), 4.0 * rng.normal(size=(3, 8))
    kind = rng.integers(0, 3, 300)
    inside = rng.integers(0, len(LEAVES), 300)
    feats = {"text": np.concatenate([unseen_text[kind] + 0.3 * rng.normal(size=(300, 16)),
                                     text_protos[inside] + 0.3 * rng.normal(size=(300, 16))]),
             "image": np.concatenate([unseen_image[kind] + 0.3 * rng.normal(size=(300, 8)),
                                      image_protos[inside] + 0.3 * rng.normal(size=(300, 8))])}
    return model, feats


def test_a_gated_model_self_trains_only_on_products_inside_the_label_space(tmp_path):
    """``gate: centroid``: products of categories the model never saw are pseudo-labelled
    without a gate whenever the combination is sure of them; with it, they are counted
    (``outside_label_space``) and left out, and only in-space products fit the regression. The
    checkpoint keeps the gate; a model told to gate but trained without one is refused."""
    model, feats = _open_set_case()
    ungated = replace(model, gate=None, model_config=model.model_config.model_copy(update={
        "decision": model.model_config.decision.model_copy(update={"self_train": SelfTrainSettings()})}))
    sure = np.exp(model.leaf_log_probs(feats).max(axis=1)) >= 0.8
    assert sure[:300].sum() > 50                       # sure of products of unseen categories
    plain = ungated.adapt(feats).self_trained
    assert plain.settings["fitted_on"] == int(sure.sum()) and "outside_label_space" not in plain.settings
    gated = model.adapt(feats)
    comp = gated.self_trained
    outside = comp.settings["outside_label_space"]
    assert outside >= 290 and comp.settings["adapted_on"] == 600 and comp.settings["gate"] == "centroid"
    assert comp.settings["fitted_on"] <= int(sure[300:].sum()) and comp.settings["fitted_on"] > 200
    gated.save(str(tmp_path / "m"))
    loaded = load_decision(str(tmp_path / "m"))
    assert loaded.gate is not None and loaded.gate.threshold == pytest.approx(model.gate.threshold)
    assert np.allclose(loaded.leaf_log_probs(feats), gated.leaf_log_probs(feats), atol=1e-5)
    assert loaded.adapt(feats).self_trained.settings["outside_label_space"] == outside
    with pytest.raises(ValueError, match="holds no gate"):
        replace(model, gate=None).adapt(feats)


def test_the_open_set_script_scores_products_of_unseen_categories_lower():
    """benchmarks/open_set.py: every label-free score it compares ranks products of the training
    categories above products of a category the training rows never had (AUROC well above 0.5),
    and the centroid score is the gate's own."""
    import importlib.util
    from pathlib import Path

    from sklearn.metrics import roc_auc_score

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "open_set.py"
    spec = importlib.util.spec_from_file_location("open_set", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    protos = 3.0 * rng.normal(size=(4, 24))
    y = rng.integers(0, 4, 400)
    x = protos[y] + rng.normal(size=(400, 24))
    inside = protos[rng.integers(0, 4, 200)] + rng.normal(size=(200, 24))
    outside = 3.0 * rng.normal(size=(1, 24)) + rng.normal(size=(200, 24))
    scores = module._scorer(x, y, C=10.0, seed=0)(np.concatenate([inside, outside]))
    truth = np.r_[np.ones(200), np.zeros(200)]
    assert set(scores) == set(module.SCORES)
    for name, s in scores.items():
        assert roc_auc_score(truth, s) > 0.8, name
    gate = LabelSpaceGate.fit("text", x, y, inside)
    assert np.allclose(gate.scores(np.concatenate([inside, outside])), scores["centroid"])


def test_training_refuses_a_gate_on_an_embedding_the_model_does_not_read():
    """``gate_feature`` must be an embedding the fitted model reads: adapting gives the model its
    own inputs only, so a gate on another one could never be applied. Refused before any row is
    read; a model without a gate gets none."""
    from prodcat.models.config import DecisionSettings
    from prodcat.train.decision import fit_gate

    gated = DecisionSettings(self_train=SelfTrainSettings(gate="centroid", gate_feature="image"))
    with pytest.raises(ValueError, match="gate_feature 'image' is not an embedding this model reads"):
        fit_gate(gated, None, [], {"text": 16, "lexical": 7})
    lexical = DecisionSettings(self_train=SelfTrainSettings(gate="centroid", gate_feature="lexical"))
    with pytest.raises(ValueError, match="is not an embedding this model reads"):
        fit_gate(lexical, None, [], {"text": 16, "lexical": 7})
    assert fit_gate(DecisionSettings(self_train=SelfTrainSettings()), None, [], {"text": 16}) is None
