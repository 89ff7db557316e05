"""The cascade policy without Ray: routing rule, temperature scaling, curve and threshold choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prodcat.cascade.policy import (
    ESCALATE_ALL,
    CascadeGoal,
    cascade_curve,
    choose_threshold,
    combine_confidence,
    route,
)
from prodcat.cascade.spec import CascadeSpec
from prodcat.core.metrics import hierarchical_counts, prf_from_counts
from prodcat.models.calibration import (
    calibrated_confidence,
    expected_calibration_error,
    fit_temperature,
    path_confidence,
    path_log_loss,
    reliability,
)
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------------- routing rule
def test_route_is_strictly_below_threshold():
    conf = np.array([0.1, 0.5, 0.5, 0.9, 1.0])
    assert route(conf, 0.5).tolist() == [True, False, False, False, False]
    assert route(conf, 0.50001).tolist() == [True, True, True, False, False]
    assert not route(conf, 0.0).any()
    assert route(conf, ESCALATE_ALL).all()          # inf: everything, even confidence 1.0


def test_route_escalates_missing_confidence():
    assert route(np.array([np.nan, 0.99]), 0.5).tolist() == [True, False]
    assert route(np.array([np.nan]), 0.0).tolist() == [True]


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_route_rejects_bad_thresholds(bad):
    with pytest.raises(ValueError):
        route(np.array([0.5]), bad)


# ---------------------------------------------------------------------- calibration
def _sample(rng, n, c, temperature):
    """Logits and labels drawn from softmax(logits / temperature): the true T is known."""
    z = rng.normal(0, 3, (n, c))
    p = np.exp(z / temperature)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_true_temperature(true_t):
    """Two levels whose true classes follow softmax(z / T): the path confidence at T is the
    probability that the argmax path is right, so the fit finds T."""
    rng = np.random.default_rng(0)
    z0, y0 = _sample(rng, 4000, 6, true_t)
    z1, y1 = _sample(rng, 4000, 4, true_t)
    out = np.stack([z0.argmax(1), z1.argmax(1)], 1)
    correct = (out == np.stack([y0, y1], 1)).all(axis=1)
    t = fit_temperature([z0, z1], out, correct)
    assert t == pytest.approx(true_t, rel=0.15)
    assert path_log_loss([z0, z1], out, correct, t) <= path_log_loss([z0, z1], out, correct, 1.0) + 1e-9


def test_temperature_scaling_reduces_ece():
    rng = np.random.default_rng(1)
    z, y = _sample(rng, 4000, 5, 3.0)                   # an over-confident model
    pred = z.argmax(1)[:, None]
    correct = pred[:, 0] == y
    t = fit_temperature([z], pred, correct)
    before, after = path_confidence([z], pred, 1.0), path_confidence([z], pred, t)
    assert expected_calibration_error(after, correct) < 0.5 * expected_calibration_error(before, correct)
    curve = reliability(after, correct)
    assert sum(curve["count"]) == len(correct) and all(0 <= a <= 1 for a in curve["accuracy"])


def test_masked_logits_and_nothing_to_fit():
    z = np.array([[2.0, -np.inf, 0.0], [0.0, 1.0, -np.inf]])
    out = np.array([[0], [1]])
    conf = calibrated_confidence([z], out, 1.0)
    assert conf[0, 0] == pytest.approx(1 / (1 + math.exp(-2)))
    assert path_confidence([z], np.array([[0], [-1]]), 1.0)[1] == 0.0        # no level: 0
    assert fit_temperature([z], out, np.array([True, True])) == 1.0        # all right: nothing to fit
    with pytest.raises(ValueError):
        fit_temperature([z], out, np.array([True, False]), bounds=(2.0, 1.0))


def test_combine_confidence_modes():
    conf = np.array([[0.9, 0.5, np.nan], [0.8, np.nan, np.nan], [np.nan, np.nan, np.nan]])
    assert combine_confidence(conf, "path") == pytest.approx([0.45, 0.8, 0.0])
    assert combine_confidence(conf, "min") == pytest.approx([0.5, 0.8, 0.0])
    assert combine_confidence(conf, "leaf") == pytest.approx([0.5, 0.8, 0.0])
    ragged = [[0.9, 0.5], [0.8], None]
    assert combine_confidence(ragged, "path") == pytest.approx([0.45, 0.8, 0.0])
    with pytest.raises(ValueError):
        combine_confidence(conf, "mean")


# ---------------------------------------------------------------------- hierarchical counts
def test_counts_per_product_sum_to_the_micro_scores():
    tax = toy_taxonomy()   # 3 = Apparel > Shoes > Boots, 4 = ... > Sandals, 5 = Apparel > Shirts
    true = [tax.label_node(3)] * 4
    pred = [tax.label_node(3), tax.label_node(4), tax.label_node(5), 0]   # 0: nothing predicted
    counts = hierarchical_counts(tax, true, pred)
    assert counts.tolist() == [[3, 3, 3], [2, 3, 3], [1, 2, 3], [0, 0, 3]]
    s = prf_from_counts(*counts.sum(axis=0))
    assert s["hP"] == pytest.approx(6 / 8) and s["hR"] == pytest.approx(6 / 12)
    assert s["hF"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)


def _scores(counts) -> dict:
    return prf_from_counts(*np.asarray(counts).sum(axis=0))


# ---------------------------------------------------------------------- curve and threshold
def _brute_force_hf(conf, text_ov, mm_ov, threshold):
    esc = route(conf, threshold)
    return _scores(np.where(esc[:, None], mm_ov, text_ov))["hF"], esc.mean()


def test_curve_matches_the_routing_rule_at_every_threshold():
    rng = np.random.default_rng(2)
    n = 300
    conf = rng.choice([0.2, 0.4, 0.4, 0.6, 0.8, 0.95], n).astype(float)   # ties on purpose
    conf[:5] = np.nan
    text_ov = np.stack([rng.integers(0, 3, n), np.full(n, 3), np.full(n, 3)], 1)
    mm_ov = np.stack([rng.integers(1, 4, n), np.full(n, 3), np.full(n, 3)], 1)
    curve = cascade_curve(conf, text_ov, mm_ov, text_ms=1.0, multimodal_ms=10.0)
    assert curve.threshold[0] == 0.0 and math.isinf(curve.threshold[-1])
    assert np.all(np.diff(curve.escalation_rate) >= 0) and curve.escalation_rate[-1] == 1.0
    for k, tau in enumerate(curve.threshold):
        hf, rate = _brute_force_hf(conf, text_ov, mm_ov, tau)
        assert curve.hf[k] == pytest.approx(hf) and curve.escalation_rate[k] == pytest.approx(rate)
        assert curve.cost_ms[k] == pytest.approx(1.0 + 10.0 * rate)
    assert curve.text_only_hf == pytest.approx(_brute_force_hf(conf, text_ov, mm_ov, 0.0)[0])
    assert curve.multimodal_only_hf == pytest.approx(_scores(mm_ov)["hF"])
    assert curve.at(0.5)["escalation_rate"] == pytest.approx(route(conf, 0.5).mean())
    assert len(curve.to_dict(max_points=3)["hF"]) == 3
    with pytest.raises(ValueError):
        cascade_curve(conf[:3], text_ov, mm_ov)


def _toy_curve():
    # confident products are right in stage 1; unconfident ones are fixed by stage 2
    conf = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95])
    text_ov = np.array([[0, 2, 2]] * 3 + [[2, 2, 2]] * 5)
    mm_ov = np.array([[2, 2, 2]] * 2 + [[1, 2, 2]] + [[2, 2, 2]] * 5)
    return cascade_curve(conf, text_ov, mm_ov)


def test_choose_threshold_goals():
    curve = _toy_curve()
    tau, k = choose_threshold(curve, CascadeGoal(kind="hf_within", value=0.5))
    assert curve.hf[k] >= curve.multimodal_only_hf - 0.005
    assert curve.escalation_rate[k] == pytest.approx(3 / 8)    # cheapest point that is good enough
    assert route(np.array([0.3, 0.6]), tau).tolist() == [True, False]
    tau, k = choose_threshold(curve, CascadeGoal(kind="max_escalation", value=0.25))
    assert curve.escalation_rate[k] == pytest.approx(0.25)
    tau, k = choose_threshold(curve, CascadeGoal(kind="min_hf", value=101))   # unreachable
    assert curve.hf[k] == curve.hf.max()
    tau, k = choose_threshold(curve, CascadeGoal(kind="hf_within", value=100))
    assert k == 0 and tau == 0.0                                  # text-only is good enough


def test_cascade_spec_round_trip():
    spec = CascadeSpec("runs/text", "runs/mm", ESCALATE_ALL, 1.7, goal={"kind": "hf_within"})
    again = CascadeSpec.from_json(spec.to_json())
    assert again == spec and math.isinf(again.threshold)
