"""Partial paths (prodcat.cascade.abstain): thresholds fitted for a target precision per level,
where an answer stops and why, and how the one strict hF scores a partial path."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.cascade import abstain
from prodcat.core.metrics import hierarchical_prf
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit


def _classes(tax, category_id: int) -> np.ndarray:
    return tax.targets(tax.label_node(category_id))


def test_threshold_is_the_largest_set_that_reaches_the_target():
    # level 0: confidences 0.9 .. 0.1; the three most confident right, then wrong, right, wrong ...
    cumulative = np.array([[0.9], [0.8], [0.7], [0.6], [0.5], [0.4]])
    correct = np.array([[True], [True], [True], [False], [True], [False]])
    # precision of the top k: 1, 1, 1, .75, .8, .67 → 0.8 is reached by the top 5 (threshold 0.5)
    assert abstain.fit_thresholds(cumulative, correct, 0.8)[0] == pytest.approx(0.5)
    assert abstain.fit_thresholds(cumulative, correct, 0.95)[0] == pytest.approx(0.7)
    assert abstain.fit_thresholds(cumulative, correct, 0.0)[0] == pytest.approx(0.4)
    never = abstain.fit_thresholds(cumulative, np.zeros_like(correct), 0.5)
    assert np.isinf(never[0])


def test_deeper_levels_are_fitted_on_the_products_that_passed_above():
    cumulative = np.array([[0.9, 0.8], [0.9, 0.3], [0.2, 0.1]])
    correct = np.array([[True, True], [True, False], [False, False]])
    t = abstain.fit_thresholds(cumulative, correct, 0.9)
    assert t[0] == pytest.approx(0.9)          # the third product stops at the root
    assert t[1] == pytest.approx(0.8)          # among the two that passed: only the first is right
    depth = abstain.kept_depth(cumulative, t)
    assert depth.tolist() == [2, 1, 0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "high"])
def test_a_target_outside_the_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        abstain.check_target(bad)


def test_a_virtual_leaf_merges_into_its_parent_like_the_stage_runner_shows_it():
    # "Apparel > Shoes" a label and a parent (of Boots): the induced taxonomy gives it a virtual child
    tax = toy_taxonomy().induced([2, 3, 5, 8])
    shoes = _classes(tax, 2)
    assert (shoes >= 0).sum() == 3
    conf = np.where(shoes >= 0, [0.9, 0.8, 0.5], 0.0)[None, :]
    levels = abstain.real_levels(tax, shoes[None, :], conf)
    assert levels.depth.tolist() == [2]                          # Apparel, Shoes (itself)
    assert levels.confidence[0, :2] == pytest.approx([0.9, 0.8 * 0.5])
    assert levels.cumulative[0, 1] == pytest.approx(0.9 * 0.4)


def test_stop_level_and_kept_depth_agree_and_say_why():
    thresholds = [0.5, 0.6, None]
    depth, reason = abstain.stop_level([0.9, 0.9, 0.99], thresholds)
    assert depth == 2 and "level 2" in reason and "no threshold" in reason
    depth, reason = abstain.stop_level([0.9, 0.5], thresholds)       # cumulative 0.45 < 0.6
    assert depth == 1 and "0.450" in reason and "0.600" in reason
    assert abstain.stop_level([0.9, 0.9], [0.5, 0.6]) == (2, abstain.COMPLETE)
    cumulative = np.array([[0.9, 0.81, 0.8], [0.9, 0.45, np.nan]])
    assert abstain.kept_depth(cumulative, abstain.as_array(thresholds)).tolist() == [2, 1]


def test_partial_paths_raise_precision_and_lower_recall_under_the_one_hf():
    tax = toy_taxonomy()
    rng = np.random.default_rng(0)
    labels = [int(tax.ids[n]) for n in tax.leaves]
    true_ids = rng.choice(labels, 400)
    true_nodes = np.array([tax.label_node(int(c)) for c in true_ids])
    # a model that is right when confident: the leaf is wrong (a sibling's) for low confidence
    classes, conf = [], []
    for c in true_ids:
        cls = _classes(tax, int(c)).copy()
        sure = rng.random() < 0.6
        depth = int((cls >= 0).sum())
        if not sure:
            cls[depth - 1] = (cls[depth - 1] + 1) % tax.level_sizes[depth - 1]
        conf.append(np.where(cls >= 0, 0.97 if sure else 0.55, 0.0))
        classes.append(cls)
    classes, conf = np.array(classes), np.array(conf)
    table = abstain.fit_table(tax, classes, conf, true_nodes)
    points = abstain.curve(tax, table, classes, conf, true_nodes, targets=(0.9,))
    full, partial = points
    assert full["target"] is None and full["full_paths"] == 1.0
    assert full["hF"] == pytest.approx(hierarchical_prf(tax, true_nodes, classes)["hF"], abs=1e-6)
    assert partial["hP"] > full["hP"] and partial["hR"] < full["hR"]
    assert partial["hP"] >= 0.9 and 0 < partial["full_paths"] < 1


def test_a_requested_target_uses_the_next_fitted_one_up():
    table = {"targets": [0.0, 0.9, 0.95], "thresholds": [[0.0], [0.5], [0.7]]}
    assert abstain.thresholds_for(table, 0.92) == [0.7]
    assert abstain.thresholds_for(table, 0.9) == [0.5]
    with pytest.raises(ValueError, match="above the largest fitted"):
        abstain.thresholds_for(table, 0.99)


def test_a_decision_level_model_answers_partial_paths_through_the_same_interface(tmp_path):
    from prodcat.models.checkpoint import checkpoint_version, load_checkpoint
    from prodcat.models.components import component_kinds
    from prodcat.models.config import ModelConfig
    from prodcat.models.decision import Combiner, DecisionModel

    tax = toy_taxonomy().induced([2, 3, 4, 5, 6, 8, 9])        # Shoes and Home: labels and parents
    rng = np.random.default_rng(0)
    nodes = rng.choice(np.sort(tax.leaves), 300)
    x = rng.normal(size=(len(tax), 8))[nodes] + 1.2 * rng.normal(size=(300, 8))   # noisy: some wrong
    linear = component_kinds.get("linear").fit("text", "text", x, nodes, tax, C=1.0)
    DecisionModel(components=[linear], combiner=Combiner({"text": 1.0}), taxonomy=tax,
                  model_config=ModelConfig(fusion="decision", modalities=["text"]),
                  input_dims={"text": 8}).save(str(tmp_path / "m"))
    model = load_checkpoint(str(tmp_path / "m"))
    assert checkpoint_version(str(tmp_path / "m")) == model.version      # what bulk scoring records
    pred = model.predict({"text": x})
    assert pred["classes"].shape == pred["level_confidence"].shape == (300, tax.num_levels)
    table = abstain.fit_table(tax, pred["classes"], pred["level_confidence"], nodes)
    full, partial = abstain.curve(tax, table, pred["classes"], pred["level_confidence"], nodes, targets=(0.95,))
    assert full["hP"] < 0.95 <= partial["hP"] + 1e-9 and partial["hR"] < full["hR"]
