"""ModelConfig validation, and the registry contract: every fusion x masking mode on a tiny model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from prodcat.core.config import ConfigError, load_config
from prodcat.models import (
    HierarchicalClassifier,
    ModelConfig,
    Prediction,
    fusions,
    hierarchical_loss,
    masking_modes,
)
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit



DIMS = {"text": 6, "image": 5, "clip_image": 4}
B = 7


def _config(**kw) -> ModelConfig:
    base = dict(modalities=["text", "image", "clip_image"], hidden_dim=8, num_attention_heads=2,
                dropout=0.1)
    return ModelConfig(**{**base, **kw})


def _batch(seed: int = 0):
    """Features with NaN in absent rows; row 0 lacks image, row 1 lacks text, row 2 has nothing."""
    gen = torch.Generator().manual_seed(seed)
    feats = {f: torch.randn(B, d, generator=gen) for f, d in DIMS.items()}
    present = {f: torch.ones(B, dtype=torch.bool) for f in DIMS}
    for row, absent in [(0, ["image"]), (1, ["text"]), (2, list(DIMS))]:
        for f in absent:
            present[f][row] = False
            feats[f][row] = float("nan")
    tax = toy_taxonomy()
    leaves = [7, 8, 4, 9, 6, 7, 4]  # Boots, Sandals, Shirts, Mugs, Decor: depths 3 and 2
    targets = torch.as_tensor(np.stack([tax.targets(n) for n in leaves]))  # [B, L]
    return feats, present, targets


# ---------------------------------------------------------------- config
def test_config_defaults_and_overrides():
    cfg = ModelConfig()
    assert (cfg.fusion, cfg.masking, cfg.modalities, cfg.teacher_forcing) == ("late", "hard", ["text", "image"], 1.0)
    assert load_config(ModelConfig, overrides=["fusion=attention", "masking=soft"]).fusion == "attention"
    assert all(field.description for field in ModelConfig.model_fields.values())


@pytest.mark.parametrize("kw, message", [
    ({"fusion": "bilinear"}, "choose one of: decision, attention, average, concat, early, late"),
    ({"masking": "strict"}, "choose one of: hard, none, soft"),
    ({"fusion": "attention", "hidden_dim": 10, "num_attention_heads": 4}, "num_attention_heads=2"),
    ({"teacher_forcing": 1.5}, "less than or equal to 1"),
    ({"level_weights": [1.0, -1.0]}, "level_weights"),
    ({"level_weights": [0.0, 0.0]}, "level_weights"),
    ({"modalities": []}, "at least one feature"),
    ({"modalities": ["text", "text"]}, "distinct"),
    ({"late_policy": "vote"}, "late_policy"),
    ({"hiden_dim": 3}, "hiden_dim"),
])
def test_config_errors_say_how_to_fix(kw, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**kw)


def test_load_config_lists_fields_on_error():
    with pytest.raises(ConfigError, match="Top-level fields: fusion"):
        load_config(ModelConfig, overrides=["fusion=nope"])


def test_classifier_rejects_inconsistent_inputs():
    tax = toy_taxonomy()
    with pytest.raises(ValueError, match="level_weights has 2 entries"):
        HierarchicalClassifier(_config(level_weights=[1.0, 1.0]), tax, DIMS)
    with pytest.raises(ValueError, match="lacks modalities"):
        HierarchicalClassifier(_config(), tax, {"text": 6})
    model = HierarchicalClassifier(_config(), tax, DIMS)
    feats, present, targets = _batch()
    with pytest.raises(KeyError, match="clip_image"):
        model({"text": feats["text"], "image": feats["image"]}, present)
    with pytest.raises(ValueError, match=r"must be \[B=7, 6\]"):
        model({**feats, "text": feats["text"][:, :3]}, present)
    with pytest.raises(ValueError, match="targets must be"):
        model(feats, present, targets[:, :2], teacher_forcing=True)
    with pytest.raises(ValueError, match="temperature"):
        model.predict(feats, present, temperature=0.0)


# ---------------------------------------------------------------- registry contract
@pytest.mark.parametrize("fusion, masking", list(itertools.product(fusions.names(), masking_modes.names())))
def test_fusion_masking_contract(fusion, masking):
    torch.manual_seed(0)
    tax = toy_taxonomy()
    model = HierarchicalClassifier(_config(fusion=fusion, masking=masking), tax, DIMS).train()
    feats, present, targets = _batch()
    logits = model(feats, present, targets)
    assert [tuple(x.shape) for x in logits] == [(B, c) for c in tax.level_sizes]
    assert not any(torch.isnan(x).any() for x in logits)
    assert all(torch.isfinite(x).any(dim=1).all() for x in logits)  # every row keeps a class
    terms = hierarchical_loss(logits, targets, model.level_weights)
    assert set(terms) == {"level0_loss", "level1_loss", "level2_loss", "loss"}
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    _check_prediction(tax, model.eval().predict(feats, present), valid=masking != "none")


def _check_prediction(tax, pred: Prediction, valid: bool) -> None:
    assert pred.classes.shape == pred.confidence.shape == (B, tax.num_levels)
    assert pred.classes.dtype == pred.node.dtype == torch.long and pred.node.shape == (B,)
    assert ((pred.confidence >= 0) & (pred.confidence <= 1)).all()
    assert (pred.confidence[pred.classes < 0] == 0).all() and (pred.confidence[pred.classes >= 0] > 0).all()
    if valid:
        for row, node in zip(pred.classes.tolist(), pred.node.tolist()):
            assert tax.is_valid_path(row) and tax.decode(row) == node


@pytest.mark.parametrize("policy", ["mlp", "mean", "max"])
def test_late_policies(policy):
    tax = toy_taxonomy()
    model = HierarchicalClassifier(_config(fusion="late", late_policy=policy), tax, DIMS).train()
    feats, present, targets = _batch()
    logits = model(feats, present, targets)
    hierarchical_loss(logits, targets)["loss"].backward()
    assert not any(torch.isnan(x).any() for x in logits)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_late_mlp_policy_starts_at_the_mean_policy():
    tax = toy_taxonomy()
    torch.manual_seed(1)
    mlp_model = HierarchicalClassifier(_config(fusion="late", late_policy="mlp", masking="none"), tax, DIMS)
    mean_model = HierarchicalClassifier(_config(fusion="late", late_policy="mean", masking="none"), tax, DIMS)
    mean_model.load_state_dict(mlp_model.state_dict(), strict=False)
    feats, present, _ = _batch()
    for a, b in zip(mlp_model.eval()(feats, present), mean_model.eval()(feats, present)):
        assert torch.allclose(a, b)


def test_missing_modality_output_ignores_its_features():
    tax = toy_taxonomy()
    model = HierarchicalClassifier(_config(fusion="attention"), tax, DIMS).eval()
    feats, present, _ = _batch()
    other = {f: x.clone() for f, x in feats.items()}
    other["image"][0] = 123.0  # absent: must not matter
    for a, b in zip(model(feats, present), model(other, present)):
        assert torch.equal(a, b)


def test_non_finite_features_count_as_missing():
    model = HierarchicalClassifier(_config(fusion="early"), toy_taxonomy(), DIMS).eval()
    feats, present, _ = _batch()  # rows 0-2 hold NaN where absent
    all_present = {f: torch.ones(B, dtype=torch.bool) for f in DIMS}
    for a, b in zip(model(feats, present), model(feats, all_present)):
        assert torch.equal(a, b)
    assert torch.equal(model.predict(feats).node, model.predict(feats, present).node)


def test_virtual_leaves_are_predicted_as_nodes():
    tax = toy_taxonomy().induced([2, 3, 5])  # "Shoes" is a label and the parent of "Boots"
    model = HierarchicalClassifier(_config(masking="hard"), tax, DIMS)
    feats, present, _ = _batch()
    targets = torch.as_tensor(np.stack([tax.targets(tax.label_node(2))] * B))  # [B, L]
    hierarchical_loss(model.train()(feats, present, targets), targets)["loss"].backward()
    pred = model.eval().predict(feats, present)
    assert all(tax.is_valid_path(row) for row in pred.classes.tolist())
    assert set(pred.node.tolist()) <= set(tax.leaves.tolist())


# ---------------------------------------------------------------- teacher forcing
def test_teacher_forcing_masks_by_the_true_parent():
    tax = toy_taxonomy()
    model = HierarchicalClassifier(_config(fusion="early", masking="hard", teacher_forcing=1.0), tax, DIMS)
    feats, present, targets = _batch()
    logits = model.train()(feats, present, targets)
    for level in range(1, tax.num_levels):
        for b in range(B):
            if targets[b, level] >= 0:
                allowed = tax.child_masks[level - 1][targets[b, level - 1]]
                assert torch.isfinite(logits[level][b]).tolist() == allowed.tolist()


def test_no_teacher_forcing_uses_the_predicted_parent():
    tax = toy_taxonomy()
    cfg = _config(fusion="early", masking="hard", dropout=0.0, teacher_forcing=0.0)
    model = HierarchicalClassifier(cfg, tax, DIMS)
    feats, present, targets = _batch()
    trained = model.train()(feats, present, targets)
    evaluated = model.eval()(feats, present, targets)
    forced = model.eval()(feats, present, targets, teacher_forcing=True)
    assert all(torch.equal(a, b) for a, b in zip(trained, evaluated))
    assert not all(torch.equal(a, b) for a, b in zip(evaluated, forced))


# ---------------------------------------------------------------- state and devices
def test_state_dict_is_plain_tensors_and_round_trips_with_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    tax = toy_taxonomy()
    model = HierarchicalClassifier(_config(fusion="late"), tax, DIMS).eval()
    state = model.state_dict()
    assert all(type(v) is torch.Tensor for v in state.values())
    assert not any("child_mask" in k for k in state)  # taxonomy buffers are not weights
    save_file(state, tmp_path / "model.safetensors")
    clone = HierarchicalClassifier(_config(fusion="late"), tax, DIMS).eval()
    clone.load_state_dict(load_file(tmp_path / "model.safetensors"))
    feats, present, _ = _batch()
    assert torch.equal(model.predict(feats, present).classes, clone.predict(feats, present).classes)


def test_taxonomy_masks_are_buffers_that_follow_to():
    tax = toy_taxonomy()
    model = HierarchicalClassifier(_config(), tax, DIMS)
    names = dict(model.named_buffers())
    assert {"masker.child_mask_1", "masker.child_mask_2"} <= set(names)
    assert names["masker.child_mask_1"].dtype == torch.bool
    model.to(torch.float64)
    assert model.masker.child_mask_1.dtype == torch.bool and model.masker.parent_index_1.dtype == torch.long
    feats, present, _ = _batch()
    assert model(feats, present)[0].dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_runs_on_gpu():
    tax = toy_taxonomy()
    model = HierarchicalClassifier(_config(fusion="attention"), tax, DIMS).to("cuda")
    feats, present, targets = _batch()
    feats = {f: x.cuda() for f, x in feats.items()}
    logits = model.train()(feats, {f: p.cuda() for f, p in present.items()}, targets.cuda())
    hierarchical_loss(logits, targets.cuda())["loss"].backward()
    assert model.eval().predict(feats, present).node.device.type == "cuda"


# ---------------------------------------------------------------- it learns
@pytest.mark.parametrize("fusion, masking", [("late", "hard"), ("attention", "soft")])
def test_learns_a_separable_toy_problem(fusion, masking):
    torch.manual_seed(0)
    tax = toy_taxonomy()
    leaves = torch.as_tensor(tax.leaves)
    prototypes = {f: torch.randn(len(leaves), d) * 3 for f, d in DIMS.items()}
    label = torch.arange(64) % len(leaves)
    feats = {f: p[label] + 0.1 * torch.randn(64, p.shape[1]) for f, p in prototypes.items()}
    present = {f: torch.rand(64) > 0.3 for f in DIMS}
    present["text"] |= ~(present["image"] | present["clip_image"])  # at least one modality
    targets = torch.as_tensor(np.stack([tax.targets(int(n)) for n in leaves[label]]))
    model = HierarchicalClassifier(_config(fusion=fusion, masking=masking, hidden_dim=16,
                                           num_attention_heads=2), tax, DIMS)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optim.zero_grad()
        hierarchical_loss(model.train()(feats, present, targets), targets)["loss"].backward()
        optim.step()
    pred = model.eval().predict(feats, present)
    assert (pred.node == leaves[label]).float().mean() > 0.9


# ---------------------------------------------------------------- the label prior
def test_label_prior_steers_every_level_towards_the_label_named_like_the_text():
    """With zero fusion weights the prior alone decides: each product's text embedding equals one
    leaf's label embedding, and the model outputs exactly that leaf's path (valid: hard masking).
    The embeddings are buffers saved with the weights; the scale is a fixed hyper-parameter."""
    tax = toy_taxonomy()
    rng = np.random.default_rng(0)
    labels = rng.normal(size=(len(tax), DIMS["text"])).astype(np.float32)
    for node in range(1, len(tax)):      # a child's label is near its parent's: paths, not names
        labels[node] += 2 * labels[int(tax.parent[node])] if tax.parent[node] > 0 else 0
    config = _config(modalities=["text", "image"], fusion="early", label_prior="paths",
                     label_prior_scale=50.0)
    model = HierarchicalClassifier(config, tax, DIMS, label_embeddings=labels).eval()
    with torch.no_grad():
        for p in model.fusion.parameters():
            p.zero_()
    leaves = [7, 8, 4, 9, 6]
    text = torch.as_tensor(labels[leaves])
    feats = {"text": text, "image": torch.zeros(len(leaves), DIMS["image"])}
    pred = model.predict(feats)
    assert pred.node.tolist() == leaves
    state = model.state_dict()
    assert {f"prior.label_embedding_{level}" for level in range(tax.num_levels)} <= set(state)
    assert "prior.scale" in state and not any(p is model.prior.scale for p in model.parameters())
    absent = model.predict(feats, {"text": torch.zeros(len(leaves), dtype=torch.bool)})
    assert absent.node.tolist() != leaves          # no text: no prior


def test_label_prior_needs_its_feature_among_the_modalities():
    with pytest.raises(ValidationError, match="label_prior_feature"):
        _config(modalities=["image"], label_prior="names")


# ---------------------------------------------------------------- the lexical prior
def test_lexical_prior_carries_the_lexical_verdict_to_every_level():
    """With zero fusion weights the lexical scores alone decide through the lexical prior: a
    product whose best lexical leaf is X is predicted on X's path at every level (valid path,
    hard masking); without the prior, or with the feature absent, they do not decide."""
    tax = toy_taxonomy()
    leaves_sorted = np.sort(tax.leaves)
    dims = {"text": DIMS["text"], "lexical": len(leaves_sorted)}
    config = _config(modalities=["text", "lexical"], fusion="early", lexical_prior=True)
    model = HierarchicalClassifier(config, tax, dims).eval()
    with torch.no_grad():
        for p in model.fusion.parameters():
            p.zero_()
        model.lexical_prior.weight.fill_(5.0)
    targets = [7, 8, 4, 9, 6]
    scores = np.full((len(targets), len(leaves_sorted)), -1.0, np.float32)
    for row, leaf in enumerate(targets):
        scores[row, int(np.searchsorted(leaves_sorted, leaf))] = 1.0
    feats = {"text": torch.zeros(len(targets), dims["text"]), "lexical": torch.as_tensor(scores)}
    pred = model.predict(feats)
    assert pred.node.tolist() == targets
    absent = model.predict(feats, {"lexical": torch.zeros(len(targets), dtype=torch.bool)})
    assert absent.node.tolist() != targets
    assert "lexical_prior.weight" in model.state_dict()


def test_lexical_prior_needs_the_lexical_modality():
    with pytest.raises(ValidationError, match="lexical_prior"):
        _config(modalities=["text", "image"], lexical_prior=True)


# ---------------------------------------------------------------- best-path decoding
def _brute_force_best_leaf(tax, logits: list[torch.Tensor], row: int) -> int:
    """The leaf whose root-to-leaf path has the largest sum of per-parent log-softmax values."""
    best, best_leaf = float("-inf"), -1
    for leaf in tax.leaves.tolist():
        classes = tax.targets(leaf)
        total = 0.0
        for level, cls in enumerate(classes.tolist()):
            if cls < 0:
                break
            z = logits[level][row].double()
            if level == 0:
                siblings = torch.ones_like(z, dtype=torch.bool)
            else:
                siblings = torch.as_tensor(tax.child_masks[level - 1][classes[level - 1]])
            total += float(z[cls] - torch.logsumexp(z[siblings], dim=0))
        if total > best:
            best, best_leaf = total, leaf
    return best_leaf


@pytest.mark.parametrize("induced", [None, [2, 3, 5]])   # with [2, 3, 5]: a virtual leaf
@pytest.mark.parametrize("seed", range(5))
def test_best_path_decoding_finds_the_most_probable_valid_path(induced, seed):
    from prodcat.models.masking import HierarchicalMasker

    tax = toy_taxonomy() if induced is None else toy_taxonomy().induced(induced)
    gen = torch.Generator().manual_seed(seed)
    logits = [3 * torch.randn(64, size, generator=gen) for size in tax.level_sizes]
    masker = HierarchicalMasker(tax, "hard", "best_path")
    _, classes = masker(logits)
    rows = classes.tolist()
    assert all(tax.is_valid_path(row) for row in rows)
    nodes = masker.nodes(classes).tolist()
    assert nodes == [_brute_force_best_leaf(tax, logits, r) for r in range(64)]
    if induced is None:                                   # two level-0 branches to choose from
        _, greedy = HierarchicalMasker(tax, "hard", "greedy")(logits)
        assert (greedy != classes).any(dim=1).sum() > 0  # the search changes some decisions


def test_best_path_decoding_is_a_model_setting_and_leaves_training_alone():
    tax = toy_taxonomy()
    feats, present, targets = _batch()
    torch.manual_seed(0)
    greedy = HierarchicalClassifier(_config(masking="hard", dropout=0.0), tax, DIMS)
    best = HierarchicalClassifier(_config(masking="hard", dropout=0.0, decoding="best_path"), tax, DIMS)
    best.load_state_dict(greedy.state_dict())
    for a, b in zip(greedy.train()(feats, present, targets), best.train()(feats, present, targets)):
        assert torch.equal(a, b)                           # teacher-forced logits: identical
    pred = best.eval().predict(feats, present)
    assert all(tax.is_valid_path(row) for row in pred.classes.tolist())
    assert ((pred.confidence > 0) == (pred.classes >= 0)).all()
    with pytest.raises(ValidationError):
        _config(decoding="beam")
