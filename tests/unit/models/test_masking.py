"""Dynamic masking: property tests over random trees (leaves at different depths) and logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prodcat.core.taxonomy import Taxonomy
from prodcat.models import HierarchicalClassifier, HierarchicalMasker, ModelConfig, masking_modes
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit




@st.composite
def trees(draw, max_nodes: int = 14) -> Taxonomy:
    """A random rooted tree: each node's parent is any earlier node (so leaf depths vary)."""
    n = draw(st.integers(2, max_nodes))
    parent = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    return Taxonomy(np.arange(n), tuple(map(str, range(n))), np.array(parent), np.zeros(n, bool))


@st.composite
def logits_for(draw, tax: Taxonomy, batch: int = 6) -> list[torch.Tensor]:
    """Per level ``[B, C_l]``: Gaussian logits at a random scale, rounded (ties) or not."""
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    rounded = draw(st.booleans())
    out = [torch.randn(batch, size, generator=gen) * scale for size in tax.level_sizes]
    return [x.round() for x in out] if rounded else out


@st.composite
def cases(draw):
    tax = draw(trees())
    return tax, draw(logits_for(tax))


def _leaf_targets(tax: Taxonomy, batch: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    leaves = rng.choice(tax.leaves, size=batch)
    return torch.as_tensor(np.stack([tax.targets(n) for n in leaves]))  # [B, L]


@pytest.mark.parametrize("mode", ["hard", "soft"])
@settings(max_examples=80, deadline=None)
@given(case=cases())
def test_masking_always_yields_valid_paths(mode, case):
    tax, logits = case
    masker = HierarchicalMasker(tax, mode)
    masked, classes = masker(logits)
    for row, node in zip(classes.tolist(), masker.nodes(classes).tolist()):
        assert tax.is_valid_path(row), row
        assert tax.decode(row) == node
    assert all(not torch.isnan(m).any() for m in masked)


@settings(max_examples=60, deadline=None)
@given(case=cases(), seed=st.integers(0, 1000))
def test_hard_masking_by_true_parent_keeps_exactly_its_children(case, seed):
    tax, logits = case
    targets = _leaf_targets(tax, logits[0].shape[0], seed)
    masker = HierarchicalMasker(tax, "hard")
    masked, _ = masker(logits, targets, torch.ones(len(targets), dtype=torch.bool))
    for level in range(1, tax.num_levels):
        for b, parent in enumerate(targets[:, level - 1].tolist()):
            finite = torch.isfinite(masked[level][b])
            if targets[b, level] >= 0:  # the true parent has children: exactly those are kept
                assert finite.tolist() == tax.child_masks[level - 1][parent].tolist()
            else:  # the path ended: the row stays unrestricted (finite)
                assert finite.all()


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_none_mode_leaves_logits_and_cuts_after_a_leaf(case):
    tax, logits = case
    masked, classes = HierarchicalMasker(tax, "none")(logits)
    assert all(torch.equal(m, x) for m, x in zip(masked, logits))
    leaves = set(tax.leaves.tolist())
    for b, row in enumerate(classes.tolist()):
        depth = next((i for i, c in enumerate(row) if c < 0), len(row))
        assert row[:depth] == [int(logits[l][b].argmax()) for l in range(depth)]  # own argmax
        assert int(tax.level_nodes[depth - 1][row[depth - 1]]) in leaves or depth == len(row)
        assert all(c < 0 for c in row[depth:])


@settings(max_examples=30, deadline=None)
@given(tax=trees(), seed=st.integers(0, 1000), mode=st.sampled_from(["hard", "soft"]))
def test_classifier_predictions_are_valid_paths(tax, seed, mode):
    torch.manual_seed(seed)
    cfg = ModelConfig(fusion="early", masking=mode, modalities=["text"], hidden_dim=8)
    model = HierarchicalClassifier(cfg, tax, {"text": 4}).eval()
    pred = model.predict({"text": torch.randn(5, 4) * 10}, {"text": torch.ones(5, dtype=torch.bool)})
    for row, node in zip(pred.classes.tolist(), pred.node.tolist()):
        assert tax.is_valid_path(row) and tax.decode(row) == node
    assert ((pred.confidence >= 0) & (pred.confidence <= 1)).all()
    assert (pred.confidence[pred.classes < 0] == 0).all()


def test_soft_mode_adds_parent_log_probability():
    tax = toy_taxonomy()  # level 1: Shoes, Shirts under Apparel (class 0); Kitchen, Decor under Home
    level0 = torch.tensor([[0.0, 1.0]])
    level1 = torch.zeros(1, 4)
    masked, _ = HierarchicalMasker(tax, "soft")([level0, level1, torch.zeros(1, 3)])
    logp = torch.log_softmax(level0, dim=1)[0]
    assert torch.allclose(masked[1][0], logp[[0, 0, 1, 1]])


def test_registry_lists_modes():
    assert masking_modes.names() == ["hard", "none", "soft"]
    with pytest.raises(KeyError, match="choose one of: hard, none, soft"):
        masking_modes.get("strict")
