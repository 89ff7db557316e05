"""hierarchical_loss on tiny hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch

from prodcat.models import hierarchical_loss

pytestmark = pytest.mark.unit



INF = float("inf")


def _case():
    level0 = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], requires_grad=True)
    level1 = torch.tensor([[0.0, 0.0, -INF], [1.0, 1.0, 1.0]], requires_grad=True)
    targets = torch.tensor([[0, 1], [1, -1]])  # product 2's path ends at level 0
    return [level0, level1], targets


def test_hand_computed_terms_and_weighted_sum():
    logits, targets = _case()
    out = hierarchical_loss(logits, targets, weights=[1.0, 0.5])
    level0 = (math.log(4 / 3) + math.log(2)) / 2  # -log(3/4) and -log(1/2)
    level1 = math.log(2)  # only product 1 counts; the -inf class has probability 0
    assert set(out) == {"level0_loss", "level1_loss", "loss"}
    assert out["level0_loss"].item() == pytest.approx(level0)
    assert out["level1_loss"].item() == pytest.approx(level1)
    assert out["loss"].item() == pytest.approx(level0 + 0.5 * level1)
    assert hierarchical_loss(logits, targets)["loss"].item() == pytest.approx(level0 + level1)


def test_backward_is_finite_with_inf_and_ignored_rows():
    logits, targets = _case()
    hierarchical_loss(logits, targets)["loss"].backward()
    assert all(torch.isfinite(x.grad).all() for x in logits)
    assert logits[1].grad[1].abs().sum() == 0  # the ignored row gets no gradient


def test_unreachable_target_is_ignored():
    # a wrong predicted parent masked the true class to -inf: counted at the level above only
    level1 = torch.tensor([[-INF, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    out = hierarchical_loss([level1], torch.tensor([[0], [2]]))
    assert out["level0_loss"].item() == pytest.approx(math.log(3))
    out["loss"].backward()
    assert torch.isfinite(level1.grad).all()


def test_level_without_targets_is_zero():
    logits = [torch.zeros(2, 2, requires_grad=True), torch.full((2, 3), -INF)]
    out = hierarchical_loss(logits, torch.tensor([[0, -1], [1, -1]]))
    assert out["level1_loss"].item() == 0.0
    out["loss"].backward()
    assert torch.isfinite(logits[0].grad).all()


def test_shape_errors():
    logits, targets = _case()
    with pytest.raises(ValueError, match="targets must be"):
        hierarchical_loss(logits, targets[:, :1])
    with pytest.raises(ValueError, match="level weights"):
        hierarchical_loss(logits, targets, weights=[1.0])
