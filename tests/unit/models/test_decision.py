"""Decision-level fusion without Ray: every component kind's contract (prodcat.models.components),
decoding on the tree, the checkpoint round trip (prodcat.models.decision), and the choices
(prodcat.train.decision: temperatures, weights, never below the best component on held-out rows)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from prodcat.core.metrics import valid_paths
from prodcat.evaluate.report import prior_label
from prodcat.models.components import component_from_record, component_kinds, log_softmax
from prodcat.models.config import ModelConfig
from prodcat.models.decision import Combiner, DecisionModel, TreeDecoder, label_log_prior, load_decision
from prodcat.models.lexical import LexicalConfig, LexicalScorer
from prodcat.train.decision import crossfit_weights, distinct_priors, fit_temperature, fit_weights, pick
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit

TAX = toy_taxonomy().induced([2, 3, 4, 5, 6, 8, 9])     # Shoes and Home are labels and parents
LEAVES = np.sort(TAX.leaves)


def _data(n: int = 120, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    nodes = rng.choice(LEAVES, n)
    protos = rng.normal(size=(len(TAX), dim))
    return protos[nodes] + 0.3 * rng.normal(size=(n, dim)), nodes


def _fit(kind: str, x: np.ndarray, nodes: np.ndarray):
    cls = component_kinds.get(kind)
    if kind == "linear":
        return cls.fit("c", "text", x, nodes, TAX, C=1.0), x
    if kind == "scores":
        scores = np.random.default_rng(1).normal(size=(len(x), len(LEAVES)))
        return cls.fit("c", "lexical", TAX), scores
    if kind == "label":
        return cls.fit("c", "text", TAX, np.random.default_rng(2).normal(size=(len(TAX), x.shape[1]))), x
    if kind == "self_trained":
        return cls.fit("c", ["text"], x, nodes, TAX, C=1.0), x
    raise AssertionError(f"no contract case for component kind {kind!r}: add one")


@pytest.mark.parametrize("kind", component_kinds.names())
def test_every_component_kind_gives_normalised_log_probs_and_round_trips(kind):
    x, nodes = _data()
    comp, inputs = _fit(kind, x, nodes)
    comp.temperature = 0.7
    lp = comp.log_probs(inputs)
    assert lp.shape == (len(x), len(LEAVES)) and np.isfinite(lp).all()
    assert np.allclose(np.exp(lp).sum(axis=1), 1.0)
    absent = comp.log_probs(inputs, present=np.arange(len(x)) % 2 == 0)
    assert np.allclose(absent[1::2], -np.log(len(LEAVES)))          # absent input: uniform
    again = component_from_record(comp.record(), LEAVES, comp.tensors)
    assert np.allclose(again.log_probs(inputs), lp)


@pytest.mark.parametrize("structure", ["flat", "per_level"])
def test_linear_components_learn_separable_classes(structure):
    x, nodes = _data(300)
    comp = component_kinds.get("linear").fit("text", "text", x[:200], nodes[:200], TAX, C=10.0,
                                             structure=structure)
    pred = LEAVES[comp.log_probs(x[200:]).argmax(axis=1)]
    assert (pred == nodes[200:]).mean() > 0.9


def test_decodings_give_valid_paths_and_differ_where_they_should():
    rng = np.random.default_rng(0)
    decoder = TreeDecoder(TAX)
    log_p = log_softmax(rng.normal(size=(200, len(LEAVES))) * 3)
    for decoding in ("greedy", "best_path", "expected_hf"):
        classes = decoder.decode(log_p, decoding)
        assert valid_paths(TAX, classes).all(), decoding
    best = decoder.decode(log_p, "best_path")
    assert (decoder.paths[log_p.argmax(axis=1)] == best).all()
    # one leaf of Home holds 0.4 but Apparel's leaves hold 0.6 between them: greedy goes to Apparel
    p = np.full(len(LEAVES), 1e-9)
    apparel = [i for i, n in enumerate(LEAVES) if TAX.path(int(n)).startswith("Apparel")]
    home = [i for i, n in enumerate(LEAVES) if TAX.path(int(n)).startswith("Home")]
    p[home[0]] = 0.4
    p[apparel] = 0.6 / len(apparel)
    lp = np.log(p / p.sum())[None]
    assert TAX.path(int(TAX.level_nodes[0][decoder.decode(lp, "greedy")[0, 0]])) == "Apparel"
    assert TAX.path(int(TAX.level_nodes[0][decoder.decode(lp, "best_path")[0, 0]])) == "Home"



def test_expected_hf_decoding_outputs_the_leaf_with_the_highest_expected_hf():
    """The oracle is the project's metric itself: each leaf's expected hF under p, summed over the
    true leaves with hierarchical_counts, not the decoder's gain matrix."""
    from prodcat.core.metrics import hierarchical_counts, prf_from_counts

    decoder = TreeDecoder(TAX)
    rng = np.random.default_rng(3)
    log_p = log_softmax(rng.normal(size=(40, len(LEAVES))) * 2)
    chosen = decoder.decode(log_p, "expected_hf")
    assert valid_paths(TAX, chosen).all()

    def expected(p: np.ndarray, leaf: int) -> float:
        out = np.repeat(decoder.paths[leaf][None], len(LEAVES), axis=0)
        counts = hierarchical_counts(TAX, LEAVES, out)
        return float(sum(pj * prf_from_counts(*c)["hF"] for pj, c in zip(p, counts)))

    for row, classes in zip(np.exp(log_p), chosen):
        scores = [expected(row, i) for i in range(len(LEAVES))]
        picked = int(np.flatnonzero((decoder.paths == classes).all(axis=1))[0])
        assert scores[picked] >= max(scores) - 1e-9
    # probability spread over Shoes' children: the shallower "Shoes itself" leaf, not one of them
    index = {TAX.path(int(n)) + ("*" if TAX.virtual[n] else ""): i for i, n in enumerate(LEAVES)}
    p = np.full(len(LEAVES), 1e-9)
    p[index["Apparel > Shoes > Boots"]] = p[index["Apparel > Shoes > Sandals"]] = 0.35
    p[index["Apparel > Shirts"]] = 0.3
    lp = np.log(p / p.sum())[None]
    assert decoder.decode(lp, "best_path")[0].tolist() == decoder.paths[index["Apparel > Shoes > Boots"]].tolist()
    assert decoder.decode(lp, "expected_hf")[0].tolist() == decoder.paths[index["Apparel > Shoes*"]].tolist()


def _model(temperature: float = 1.0) -> tuple[DecisionModel, dict]:
    x, nodes = _data(200)
    texts = [f"{TAX.path(int(n)).split(' > ')[-1]} item {i % 7}" for i, n in enumerate(nodes)]
    lexical = LexicalScorer(LexicalConfig(analyzer="word+char", min_df=1)).fit(texts, nodes, LEAVES)
    lin = component_kinds.get("linear").fit("text", "text", x, nodes, TAX, C=1.0)
    scores = component_kinds.get("scores").fit("lexical", "lexical", TAX)
    model = DecisionModel(components=[lin, scores], combiner=Combiner({"text": 1.0, "lexical": 0.5}),
                          taxonomy=TAX, model_config=ModelConfig(fusion="decision", modalities=["text", "lexical"]),
                          input_dims={"text": x.shape[1], "lexical": len(LEAVES)}, lexical=lexical,
                          calibration={"temperature": temperature, "threshold": 0.5})
    feats = {"text": x[:30], "lexical": lexical.scores(texts[:30])}
    return model, feats


def test_serving_confidences_multiply_to_the_output_nodes_probability():
    model, feats = _model()
    pred = model.predict(feats)
    log_p = model.leaf_log_probs(feats)
    masses = model.decoder.level_log_mass(log_p)
    for i in range(len(pred["node"])):
        depth = int((pred["classes"][i] >= 0).sum())
        deepest = pred["classes"][i, depth - 1]
        assert np.prod(pred["level_confidence"][i, :depth]) == pytest.approx(
            np.exp(masses[depth - 1][i, deepest]), rel=1e-4)
    assert valid_paths(TAX, pred["classes"]).all()
    assert (pred["category_id"] == TAX.ids[pred["node"]]).all()


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    model, feats = _model(temperature=1.7)
    model.save(str(tmp_path / "m"))
    loaded = load_decision(str(tmp_path / "m"))
    a, b = model.predict(feats), loaded.predict(feats)
    assert (a["classes"] == b["classes"]).all()
    assert np.allclose(a["level_confidence"], b["level_confidence"], atol=1e-5)
    assert loaded.version == model.version and len(loaded.version) == 12
    assert loaded.lexical.config.analyzer == "word+char"     # word and character vocabularies travel
    assert np.allclose(loaded.lexical.scores(["Boots item 1"]), model.lexical.scores(["Boots item 1"]), atol=1e-2)
    assert not list(tmp_path.glob("m/*.pkl"))
    with pytest.raises(KeyError, match="lexical"):
        loaded.predict({"text": feats["text"]})
    with pytest.raises(ValueError, match="expected shape"):
        loaded.predict({"text": feats["text"][:, :3], "lexical": feats["lexical"]})


def test_temperature_and_weights_are_fitted_on_held_out_rows():
    rng = np.random.default_rng(0)
    n, c = 2000, len(LEAVES)
    targets = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), targets] += 2.0
    truth = 2.5                                              # the data were made at T = 2.5
    probs = np.exp(log_softmax(logits))
    sampled = np.array([rng.choice(c, p=row / row.sum()) for row in probs])
    assert fit_temperature([logits * truth], [sampled]) == pytest.approx(truth, rel=0.15)
    good = log_softmax(logits)
    noise = log_softmax(rng.normal(size=(n, c)))
    weights = fit_weights([{"good": good, "noise": noise}], [sampled], ["good", "noise"])
    assert weights["good"] > 0.5 and weights["noise"] < 0.1 and min(weights.values()) >= 0


def _candidate(name, right):
    """A candidate right on the products where ``right`` is True: counts [B, 3] (common, predicted,
    true nodes), 3 levels each."""
    counts = np.where(right[:, None], [[3, 3, 3]], [[1, 3, 3]]).astype(float)
    return {"candidate": name, "decoding": "greedy", "weights": {},
            "hF": float(right.mean())}, counts


@pytest.mark.parametrize("margin, expected", [(0.005, "equal"), (0.15, "fitted")])
def test_paired_choice_keeps_equal_weights_unless_a_candidate_really_beats_them(margin, expected):
    rng = np.random.default_rng(0)
    n = 600
    groups = np.arange(n) // 2                               # near-duplicate pairs
    base = rng.random(n) < 0.7
    better = base | (rng.random(n) < margin)                 # right wherever equal is, and more
    pairs = [_candidate("equal", base), _candidate("fitted", better),
             _candidate("text alone", rng.random(n) < 0.5)]
    candidates, counts = [c for c, _ in pairs], [x for _, x in pairs]
    assert pick(candidates, counts, groups, "max")["candidate"] == "fitted"
    chosen = pick(candidates, counts, groups, "paired")
    assert chosen["candidate"] == expected
    low = candidates[1]["vs_equal"][1]
    assert (low > 0) == (expected == "fitted")
    assert candidates[2]["vs_equal"][2] < 0                  # worse alone: its interval below 0
    # fitted weights that could not be cross-fitted never replace equal weights when that is asked
    candidates[1]["out_of_sample"] = False
    assert pick(candidates, counts, groups, "paired", out_of_sample_only=True)["candidate"] == "equal"
    assert pick(candidates, counts, groups, "paired")["candidate"] == expected


@pytest.mark.parametrize("margin, expected", [(0.005, "once"), (0.15, "uniform")])
def test_a_prior_base_is_kept_unless_another_correction_really_beats_it(margin, expected):
    """``prior_base: once``: an equal-weights candidate with another prior correction, ahead by a
    margin the bootstrap cannot see, does not replace it (without a base the higher mean does);
    ahead by a real difference, it does."""
    rng = np.random.default_rng(0)
    n = 600
    groups = np.arange(n) // 2
    base = rng.random(n) < 0.7
    pairs = [_candidate("equal", base), _candidate("equal", base | (rng.random(n) < margin))]
    candidates, counts = [c for c, _ in pairs], [x for _, x in pairs]
    candidates[0]["prior"], candidates[1]["prior"] = "once", "uniform"
    assert pick(candidates, counts, groups, "paired")["prior"] == "uniform"          # the higher mean
    assert pick(candidates, counts, groups, "paired", prior_base="once")["prior"] == expected
    assert pick(candidates, counts, groups, "paired", prior_base="none")["prior"] == "uniform"  # no such base


def test_every_set_agreement_keeps_the_base_when_one_held_out_set_argues_against_it():
    """``agreement: every_set``: fitted weights (or another prior correction) ahead on the pooled
    held-out products by a real difference, but below the base on one held-out set by itself, do
    not make the model leave the base; a component alone ahead on the pooled products does (the
    model never stays below its best component), and then, as when a candidate is level or ahead
    on every set, the choice is the pooled rule's: it is always the pooled rule's or the base."""
    rng = np.random.default_rng(0)
    n = 600
    groups = np.arange(n) // 2
    base = rng.random(n) < 0.7
    better = base | (rng.random(n) < 0.15)
    pairs = [_candidate("equal", base), _candidate("fitted", better), _candidate("text alone", better)]
    candidates, counts = [c for c, _ in pairs], [x for _, x in pairs]
    candidates[0]["per_set"] = {"cross_platform:a": 0.90, "in_platform": 0.95}
    candidates[1]["per_set"] = {"cross_platform:a": 0.89, "in_platform": 0.99}   # behind on set a
    candidates[2]["per_set"] = {"cross_platform:a": 0.80, "in_platform": 0.99}
    candidates[2]["hF"] -= 0.01                        # the fitted weights have the higher mean
    assert pick(candidates, counts, groups, "paired")["candidate"] == "fitted"
    chosen = pick(candidates, counts, groups, "paired", agreement="every_set")
    assert chosen["candidate"] == "fitted"   # the component alone leaves the base; then the pooled choice
    assert candidates[1]["every_set"] is False and "every_set" not in candidates[2]
    del candidates[2], counts[2]
    assert pick(candidates, counts, groups, "paired", agreement="every_set")["candidate"] == "equal"
    candidates[1]["per_set"]["cross_platform:a"] = 0.90                          # level there
    assert pick(candidates, counts, groups, "paired", agreement="every_set")["candidate"] == "fitted"
    assert candidates[1]["every_set"] is True
    # another prior correction is held to it too
    candidates[0]["prior"] = "once"
    candidates[1].update(candidate="equal", prior="uniform", per_set={"cross_platform:a": 0.89, "in_platform": 0.99})
    assert pick(candidates, counts, groups, "paired", prior_base="once")["prior"] == "uniform"
    assert pick(candidates, counts, groups, "paired", prior_base="once", agreement="every_set")["prior"] == "once"
    assert candidates[1]["every_set"] is False


@pytest.mark.parametrize("margin", [0.005, 0.05, 0.15])
def test_every_set_is_the_pooled_rule_with_one_held_out_set(margin):
    """With one held-out set (a model trained on one platform: a transfer_val pair), each
    candidate's per-set hF is its pooled hF, so ``every_set`` chooses what ``pooled`` chooses."""
    from prodcat.core.metrics import prf_from_counts

    rng = np.random.default_rng(1)
    n = 600
    groups = np.arange(n) // 2
    base = rng.random(n) < 0.7
    pairs = [_candidate("equal", base), _candidate("fitted", base | (rng.random(n) < margin)),
             _candidate("equal", (rng.random(n) < 0.72))]
    candidates, counts = [c for c, _ in pairs], [x for _, x in pairs]
    candidates[0]["prior"], candidates[2]["prior"] = "once", "uniform"
    for c, x in zip(candidates, counts):
        c["hF"] = prf_from_counts(*x.sum(axis=0))["hF"]
        c["per_set"] = {"in_platform": c["hF"]}
    pooled = pick(candidates, counts, groups, "paired", prior_base="once")
    assert pick(candidates, counts, groups, "paired", prior_base="once", agreement="every_set") is pooled


def test_crossfit_scores_each_held_out_set_with_weights_fitted_on_the_others():
    """Two held-out sets that disagree (component a informative on the first, b on the second):
    weights fitted on both look good on both; cross-fitted, each set gets the other's weights,
    which is what fitted weights would do on a platform they were not fitted on."""
    rng = np.random.default_rng(0)
    n, c = 800, len(LEAVES)
    sets, targets = [], []
    for informative in ("a", "b"):
        t = rng.integers(0, c, n)
        good = rng.normal(size=(n, c))
        good[np.arange(n), t] += 3.0
        noise = rng.normal(size=(n, c))
        parts = {"a": good, "b": noise} if informative == "a" else {"a": noise, "b": good}
        sets.append({k: log_softmax(v) for k, v in parts.items()})
        targets.append(t)
    both = fit_weights(sets, targets, ["a", "b"])
    first, second = crossfit_weights(sets, targets, ["a", "b"])
    assert first["b"] > first["a"] + 0.5                     # fitted on the second set only
    assert second["a"] > second["b"] + 0.5                   # fitted on the first set only
    assert first == pytest.approx(fit_weights(sets[1:], targets[1:], ["a", "b"]))

    def nll(weights, lp, t):
        z = log_softmax(sum(w * lp[k] for k, w in weights.items()))
        return -z[np.arange(len(t)), t].mean()
    in_sample = np.mean([nll(both, lp, t) for lp, t in zip(sets, targets)])
    out_of_sample = np.mean([nll(w, lp, t) for w, lp, t in zip((first, second), sets, targets)])
    assert out_of_sample > in_sample + 0.5                   # in sample flatters fitted weights
    with pytest.raises(ValueError, match="2 or more held-out sets"):
        crossfit_weights(sets[:1], targets[:1], ["a", "b"])


def test_label_log_prior_is_the_label_distribution_over_seen_leaves_and_zero_elsewhere():
    nodes = np.array([LEAVES[0]] * 3 + [LEAVES[2]])
    log_prior = label_log_prior(LEAVES, nodes)
    assert log_prior.shape == (len(LEAVES),)
    assert log_prior[0] == pytest.approx(np.log(0.75)) and log_prior[2] == pytest.approx(np.log(0.25))
    assert (log_prior[[1, *range(3, len(LEAVES))]] == 0).all()      # unseen leaves: no correction
    with pytest.raises(ValueError, match="none of 2 labels"):
        label_log_prior(LEAVES, np.array([10_000, 10_001]))


def test_prior_once_recovers_the_bayes_posterior_of_independent_experts():
    """Two experts see independent evidence; each posterior is pi * L_k (normalised). The exact
    posterior given both is pi * L_1 * L_2: the sum of the experts' log-posteriors counts the prior
    twice, ``once`` once, ``uniform`` never; the zero-shot label component carries no prior."""
    rng = np.random.default_rng(0)
    c, b = len(LEAVES), 50
    prior = rng.dirichlet(np.full(c, 0.5))
    log_pi = np.log(prior)
    like = [np.exp(rng.normal(size=(b, c))) for _ in range(2)]          # L_k(y) per product
    experts = {f"e{k}": log_softmax(log_pi + np.log(lk)) for k, lk in enumerate(like)}
    exact = log_softmax(log_pi + np.log(like[0]) + np.log(like[1]))
    no_prior = log_softmax(np.log(like[0]) + np.log(like[1]))
    label = log_softmax(rng.normal(size=(b, c)))                       # carries no prior
    carriers = {"e0": 1.0, "e1": 1.0}

    def combined(prior_mode: str, weights: dict | None = None, extra: dict | None = None) -> np.ndarray:
        w = weights or {"e0": 1.0, "e1": 1.0}
        return Combiner(w, prior=prior_mode, log_prior=log_pi, carriers=carriers).combine({**experts, **(extra or {})})

    assert np.allclose(combined("once"), exact, atol=1e-9)
    assert np.allclose(combined("uniform"), no_prior, atol=1e-9)
    assert not np.allclose(combined("none"), exact, atol=1e-3)          # the prior counted twice
    assert np.allclose(combined("none"), log_softmax(2 * log_pi + np.log(like[0]) + np.log(like[1])))
    # weights scale the prior with the experts; the label component adds evidence, not prior
    assert np.allclose(combined("once", {"e0": 0.5, "e1": 0.5}),
                       log_softmax(0.5 * (log_pi + np.log(like[0]) + np.log(like[1]))), atol=1e-9)
    with_label = combined("once", {"e0": 1.0, "e1": 1.0, "label": 1.0}, {"label": label})
    assert np.allclose(with_label, log_softmax(exact + label), atol=1e-9)
    # calibrated at T: an expert's log-probabilities hold log pi / T, and so does the correction
    t = [2.0, 0.5]
    tempered = {f"e{k}": log_softmax((log_pi + np.log(lk)) / t[k]) for k, lk in enumerate(like)}
    scaled = {f"e{k}": 1 / t[k] for k in range(2)}
    got = Combiner({"e0": 1.0, "e1": 1.0}, prior="uniform", log_prior=log_pi, carriers=scaled).combine(tempered)
    assert np.allclose(got, log_softmax(np.log(like[0]) / t[0] + np.log(like[1]) / t[1]), atol=1e-9)


def test_prior_corrections_that_change_nothing_are_not_scored_twice():
    carriers = {"text": 1.0, "lexical": 0.5}
    assert distinct_priors({"text": 1.0, "lexical": 1.0}, ["none", "once", "uniform"], carriers) == \
        ["none", "once", "uniform"]
    assert distinct_priors({"text": 1.0, "lexical": 0.0}, ["none", "once", "uniform"], carriers) == ["none", "uniform"]
    assert distinct_priors({"label": 1.0}, ["none", "once", "uniform"], carriers) == ["none"]
    with pytest.raises(ValueError, match="unknown prior correction"):
        Combiner({"text": 1.0}, prior="twice")
    with pytest.raises(ValueError, match="needs the label distribution"):
        Combiner({"text": 1.0}, prior="once")


def test_the_prior_correction_travels_with_the_checkpoint(tmp_path):
    model, feats = _model()
    before = model.predict(feats)["classes"]
    skew = np.full(len(LEAVES), np.log(1e-3), np.float32)
    skew[0] = np.log(0.99)
    model.combiner = Combiner({"text": 1.0, "lexical": 1.0}, prior="uniform", log_prior=skew,
                              carriers={"text": 1.0, "lexical": 0.8})
    model.save(str(tmp_path / "m"))
    loaded = load_decision(str(tmp_path / "m"))
    assert loaded.combiner.prior == "uniform" and loaded.combiner.carriers == {"text": 1.0, "lexical": 0.8}
    assert np.allclose(loaded.combiner.log_prior, skew)
    assert np.allclose(loaded.leaf_log_probs(feats), model.leaf_log_probs(feats), atol=1e-5)
    # a checkpoint written before the correction existed loads with none
    model.combiner = Combiner({"text": 1.0, "lexical": 0.5})
    model.save(str(tmp_path / "old"))
    old = load_decision(str(tmp_path / "old"))
    assert old.combiner.prior == "none" and old.combiner.log_prior is None
    assert (old.predict(feats)["classes"] == before).all()


def test_em_label_prior_recovers_a_shifted_label_distribution():
    """Saerens et al. (2002): products drawn from known class-conditional densities under a
    skewed label distribution; EM on the prior-free log-likelihoods (no label read) recovers that
    distribution, and the adapted posterior classifies better than the uniform one."""
    from prodcat.models.decision import em_label_prior

    rng = np.random.default_rng(0)
    c, n = len(LEAVES), 6000
    target = rng.dirichlet(np.full(c, 0.4))
    means = rng.normal(scale=2.5, size=(c, 2))
    y = rng.choice(c, n, p=target)
    x = means[y] + rng.normal(size=(n, 2))
    log_lik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(2)        # [B, C], up to a constant
    estimate = np.exp(em_label_prior(log_lik))
    assert estimate.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(estimate - np.bincount(y, minlength=c) / n).max() < 0.03   # the MLE: overlap, not EM
    uniform_acc = (log_lik.argmax(1) == y).mean()
    adapted_acc = ((log_lik + np.log(estimate)).argmax(1) == y).mean()
    assert adapted_acc > uniform_acc
    assert np.isfinite(em_label_prior(np.zeros((1, c)))).all()         # one product: still a distribution
    with pytest.raises(ValueError, match="at least one product"):
        em_label_prior(np.zeros((0, c)))


def test_adapt_estimates_the_target_platforms_labels_and_travels_with_the_checkpoint(tmp_path):
    """``prior: adapt`` combines as ``uniform`` until adapted; adapting adds the EM estimate of
    the given products' label distribution; predictions then do not depend on the batch; the
    estimate is saved with the checkpoint; the other corrections refuse to adapt."""
    from prodcat.models.decision import em_label_prior

    model, feats = _model()
    skew = label_log_prior(LEAVES, np.array([LEAVES[0]] * 9 + [LEAVES[1]]))
    carriers = {"text": 1.0}
    model.combiner = Combiner({"text": 1.0, "lexical": 0.5}, "best_path", "adapt", skew, carriers)
    uniform = Combiner({"text": 1.0, "lexical": 0.5}, "best_path", "uniform", skew, carriers)
    log_probs = model.component_log_probs(feats)
    assert np.allclose(model.leaf_log_probs(feats), uniform.combine(log_probs))
    adapted = model.adapt(feats)
    assert adapted.combiner.adapted_on == 30 and model.combiner.target_log_prior is None
    flat = uniform.combine(log_probs)
    assert np.allclose(adapted.combiner.target_log_prior, em_label_prior(flat), atol=1e-5)
    assert np.allclose(adapted.leaf_log_probs(feats), log_softmax(flat + em_label_prior(flat)), atol=1e-5)
    whole = adapted.predict(feats)["classes"]
    halves = np.concatenate([adapted.predict({k: v[i:i + 15] for k, v in feats.items()})["classes"]
                             for i in (0, 15)])
    assert (whole == halves).all()
    adapted.save(str(tmp_path / "m"))
    loaded = load_decision(str(tmp_path / "m"))
    assert loaded.combiner.prior == "adapt" and loaded.combiner.adapted_on == 30
    assert np.allclose(loaded.combiner.target_log_prior, adapted.combiner.target_log_prior)
    assert np.allclose(loaded.leaf_log_probs(feats), adapted.leaf_log_probs(feats), atol=1e-5)
    with pytest.raises(ValueError, match="no product"):
        model.adapt({k: v[:0] for k, v in feats.items()})
    model.combiner = uniform
    with pytest.raises(ValueError, match="only a model trained with prior 'adapt'"):
        model.adapt(feats)
    with pytest.raises(ValueError, match="needs prior 'adapt'"):
        Combiner({"text": 1.0}, prior="uniform", log_prior=skew, target_log_prior=skew)
    # adapt adds an estimate: it is scored even where the prior's coefficient repeats another
    assert distinct_priors({"label": 1.0}, ["none", "once", "uniform", "adapt"], carriers) == ["none", "adapt"]


class _Rows:
    """The columns of a held-out set that :func:`prodcat.train.decision.choose` reads."""

    def __init__(self, nodes: np.ndarray) -> None:
        self.cols = {"node": np.asarray(nodes, np.int64),
                     "product_id": np.asarray([f"p:{i}" for i in range(len(nodes))], object),
                     "group_id": np.asarray([f"g:{i}" for i in range(len(nodes))], object)}

    def column(self, name: str) -> np.ndarray:
        return self.cols[name]

    def __len__(self) -> int:
        return len(self.cols["node"])


def _self_training_case(seed: int = 0):
    """A source platform whose images say nothing, and a target platform where 30 % of the texts
    are ambiguous (halfway between their category and another) but every image is clean: the
    source model is sure of the clear-text products only."""
    from prodcat.models.config import SelfTrainSettings

    rng = np.random.default_rng(seed)
    text_protos, image_protos = rng.normal(size=(len(TAX), 16)), rng.normal(size=(len(TAX), 8))
    source = rng.choice(LEAVES, 400)
    x_text, x_image = text_protos[source] + 0.3 * rng.normal(size=(400, 16)), rng.normal(size=(400, 8))
    text = component_kinds.get("linear").fit("text", "text", x_text, source, TAX, C=10.0)
    image = component_kinds.get("linear").fit("image", "image", x_image, source, TAX, C=10.0)
    config = ModelConfig(fusion="decision", modalities=["text", "image"],
                         decision={"self_train": SelfTrainSettings().model_dump()})
    model = DecisionModel(components=[text, image], combiner=Combiner({"text": 1.0, "image": 1.0}),
                          taxonomy=TAX, model_config=config, input_dims={"text": 16, "image": 8})
    target = rng.choice(LEAVES, 600)
    noisy = rng.random(600) < 0.3
    other = rng.choice(LEAVES, 600)
    t_text = (np.where(noisy[:, None], 0.5 * (text_protos[target] + text_protos[other]), text_protos[target])
              + 0.3 * rng.normal(size=(600, 16)))
    feats = {"text": t_text, "image": image_protos[target] + 0.1 * rng.normal(size=(600, 8))}
    return model, feats, target, noisy


def test_self_training_learns_the_target_platforms_own_inputs_and_travels_with_the_checkpoint(tmp_path):
    """``model.decision.self_train``: adapting fits a ``self_trained`` regression (text and image
    side by side) on the target products the combination is sure of, labelled by it, and adds it;
    the products whose text is ambiguous are then told apart by their images, which the source
    model could not read. The component is saved and loaded with the checkpoint, a second adapt replaces it,
    and a feature the model lacks is refused."""
    model, feats, target, noisy = _self_training_case()
    assert model.adapts and model.combiner.prior == "none"
    before = LEAVES[model.leaf_log_probs(feats).argmax(axis=1)]
    adapted = model.adapt(feats)
    after = LEAVES[adapted.leaf_log_probs(feats).argmax(axis=1)]
    right_before, right_after = (before[noisy] == target[noisy]).mean(), (after[noisy] == target[noisy]).mean()
    assert right_before < 0.7                                             # the text is ambiguous there
    assert right_after > right_before + 0.2                              # the images tell them apart
    assert (after[~noisy] == target[~noisy]).mean() >= (before[~noisy] == target[~noisy]).mean()
    comp = next(c for c in adapted.components if c.kind == "self_trained")
    sure = np.exp(model.leaf_log_probs(feats).max(axis=1)) >= 0.8
    assert comp.settings["fitted_on"] == int(sure.sum()) and comp.settings["adapted_on"] == 600
    assert adapted.combiner.weights["self_trained"] == 1.0 and "self_trained" not in model.combiner.weights
    adapted.save(str(tmp_path / "m"))
    loaded = load_decision(str(tmp_path / "m"))
    assert np.allclose(loaded.leaf_log_probs(feats), adapted.leaf_log_probs(feats), atol=1e-5)
    again = loaded.adapt({k: v[:300] for k, v in feats.items()})       # replaces, never stacks
    assert [c.kind for c in again.components].count("self_trained") == 1
    assert next(c for c in again.components if c.kind == "self_trained").settings["adapted_on"] == 300
    assert [c.name for c in loaded.without_self_training().components] == ["text", "image"]
    wrong = replace(model, model_config=model.model_config.model_copy(update={"decision": model.model_config.decision.model_copy(
        update={"self_train": model.model_config.decision.self_train.model_copy(update={"features": ["joint"]})})}))
    with pytest.raises(ValueError, match=r"self_train.features \['joint'\] are not inputs"):
        wrong.adapt(feats)
    sure_of_nothing = replace(model, model_config=model.model_config.model_copy(update={"decision": model.model_config.decision.model_copy(
        update={"self_train": model.model_config.decision.self_train.model_copy(update={"threshold": 1.0})})}))
    with pytest.warns(UserWarning, match="no self-trained component added"):
        unchanged = sure_of_nothing.adapt(feats)
    assert [c.name for c in unchanged.components] == ["text", "image"]


def test_self_training_on_new_platforms_only_leaves_the_training_platforms_alone():
    """``scope: new_platforms`` (the default, stop 41): products of the platforms the model was
    trained on are never self-trained on; with none of another platform nothing is added and the
    model predicts as before; with some, only they fit the regression; ``scope: always`` (stop 40)
    self-trains on every product; a model that does not record its platforms treats all as new."""
    model, feats, _, _ = _self_training_case()
    assert model.self_training_features == ["text", "image"]    # features null: text and image read
    text_only = replace(model, components=model.components[:1], input_dims={"text": 16},
                        combiner=Combiner({"text": 1.0}))
    assert text_only.self_training_features == ["text"]
    assert text_only.adapt({"text": feats["text"]}).self_trained.settings["features"] == ["text"]
    other = replace(text_only, components=[replace(model.components[0], name="ft_text", feature="ft_text")],
                    input_dims={"ft_text": 16}, combiner=Combiner({"ft_text": 1.0}))
    assert other.self_training_features == ["ft_text"] and other.adapts     # a prefixed text feature
    prefixed = replace(model, input_dims={"text": 16, "hr_image": 16, "lexical": 4})
    assert prefixed.self_training_features == ["text", "hr_image"]          # stop 47: not text alone
    both = replace(model, input_dims={"text": 16, "ft_text": 16, "image": 16, "hr_image": 16})
    assert both.self_training_features == ["text", "image"]                 # the unprefixed first
    neither = replace(model, input_dims={"joint": 16, "lexical": 4})
    assert neither.self_training_features == ["joint"]                      # neither: every embedding
    assert model.trained_platforms is None                      # not recorded: every product is new
    assert [c.kind for c in model.adapt(feats).components].count("self_trained") == 1
    model = replace(model, selection={"platforms": ["source"]})
    assert model.model_config.decision.self_train.scope == "new_platforms" and model.adapts
    known = np.array(["source"] * 600, object)
    same = model.adapt(feats, platforms=known)
    assert same.self_trained is None and same.components == model.components
    assert np.allclose(same.leaf_log_probs(feats), model.leaf_log_probs(feats))
    mixed = np.where(np.arange(600) < 250, "target", "source").astype(object)
    adapted = model.adapt(feats, platforms=mixed)
    comp = adapted.self_trained
    sure = np.exp(model.leaf_log_probs(feats).max(axis=1)) >= 0.8
    assert comp.settings["adapted_on"] == 250 and comp.settings["fitted_on"] == int(sure[:250].sum())
    assert comp.settings["scope"] == "new_platforms"
    assert model.new_platform_mask(mixed, 600).sum() == 250 and model.new_platform_mask(None, 600).all()
    always = replace(model, model_config=model.model_config.model_copy(update={"decision": model.model_config.decision.model_copy(
        update={"self_train": model.model_config.decision.self_train.model_copy(update={"scope": "always"})})}))
    assert always.adapt(feats, platforms=known).self_trained.settings["adapted_on"] == 600
    with pytest.raises(ValueError, match="expected 600 values"):
        model.adapt(feats, platforms=known[:10])
    with pytest.raises(ValueError, match="expected 600 values"):
        always.adapt(feats, platforms=known[:10])


def test_balanced_pseudo_labels_keep_the_surest_share_of_every_chosen_leaf():
    """``keep: balanced`` (class-balanced self-training): in each leaf the combination chooses,
    the ``ceil(share * n)`` of its n products with the highest top probability, so a rare leaf
    whose products are all unsure keeps some where ``confidence`` keeps none of it."""
    from prodcat.models.decision import pseudo_labels

    p = np.array([[0.95, 0.05, 0.0], [0.90, 0.10, 0.0], [0.85, 0.15, 0.0], [0.6, 0.4, 0.0],
                  [0.3, 0.6, 0.1], [0.3, 0.55, 0.15], [0.1, 0.2, 0.7]]) + 1e-9
    combined = np.log(p / p.sum(axis=1, keepdims=True))
    labels, kept = pseudo_labels(combined, {}, "balanced", share=0.5)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert kept.tolist() == [True, True, False, False, True, False, True]   # 2 of 4, 1 of 2, 1 of 1
    assert pseudo_labels(combined, {}, "balanced", share=1.0)[1].all()
    assert pseudo_labels(combined, {}, "confidence", threshold=0.8)[1].tolist() == [True] * 3 + [False] * 4
    order = np.random.default_rng(0).permutation(len(p))                   # does not depend on order
    assert pseudo_labels(combined[order], {}, "balanced", share=0.5)[1].tolist() == kept[order].tolist()
    with pytest.raises(ValueError, match="share must be in"):
        pseudo_labels(combined, {}, "balanced", share=0.0)
    with pytest.raises(ValueError, match="confidence, agree or balanced"):
        pseudo_labels(combined, {}, "all")


def test_self_training_rounds_relabel_with_the_previous_regression():
    """``rounds: 2``: the second round draws its pseudo-labels from the combination that includes
    the first round's regression, so it keeps more of the target's products than the first (the
    regression makes the combination surer of the ambiguous ones) and is no worse on them; the
    component records how many each round kept; one round is what ``rounds: 1`` adapts."""
    model, feats, target, noisy = _self_training_case()
    settings = model.model_config.decision.self_train
    twice = replace(model, model_config=model.model_config.model_copy(update={"decision": model.model_config.decision.model_copy(
        update={"self_train": settings.model_copy(update={"rounds": 2})})}))
    once, again = model.adapt(feats), twice.adapt(feats)
    first, second = again.self_trained.settings["rounds"]
    assert first == once.self_trained.settings["fitted_on"] and "rounds" not in once.self_trained.settings
    assert second > first and again.self_trained.settings["fitted_on"] == second
    right = lambda m: (LEAVES[m.leaf_log_probs(feats).argmax(axis=1)] == target)[noisy].mean()  # noqa: E731
    assert right(again) >= right(once) - 0.02
    assert [c.kind for c in again.components].count("self_trained") == 1


def _co_training_case(seed: int = 0):
    """Two text components (``text``, ``lt_text``: one input) and an image component, trained on
    a source platform where text and image both tell the leaves apart. On the target platform 70 %
    of one leaf's products are written halfway between two other leaves' source texts plus a word
    the source never used (a direction ``d``; Flipkart's deodorants, "... Combo Set", which the
    text components put in Outfit Sets or Shoes); their images are as clear as the source's."""
    from prodcat.models.config import SelfTrainSettings

    rng = np.random.default_rng(seed)
    text_protos, image_protos = rng.normal(size=(len(TAX), 16)), rng.normal(size=(len(TAX), 8))
    source = rng.choice(LEAVES, 600)
    x_text = text_protos[source] + 0.3 * rng.normal(size=(600, 16))
    x_image = image_protos[source] + 1.0 * rng.normal(size=(600, 8))
    linear = component_kinds.get("linear")
    components = [linear.fit("text", "text", x_text, source, TAX, C=10.0),
                  linear.fit("lt_text", "lt_text", x_text + 0.1 * rng.normal(size=x_text.shape), source, TAX, C=10.0),
                  linear.fit("image", "image", x_image, source, TAX, C=10.0)]
    config = ModelConfig(fusion="decision", modalities=["text", "lt_text", "image"],
                         decision={"self_train": SelfTrainSettings(views="cross").model_dump()})
    model = DecisionModel(components=components, combiner=Combiner({"text": 1.0, "lt_text": 1.0, "image": 1.0}),
                          taxonomy=TAX, model_config=config, input_dims={"text": 16, "lt_text": 16, "image": 8})
    target = rng.choice(LEAVES, 800)
    shifted = (target == LEAVES[0]) & (rng.random(800) < 0.7)   # written between LEAVES[1] and [2], plus d
    d = 1.5 * rng.normal(size=16)
    t_text = (np.where(shifted[:, None], 0.5 * (text_protos[LEAVES[1]] + text_protos[LEAVES[2]]) + d,
                       text_protos[target])
              + 0.3 * rng.normal(size=(800, 16)))
    feats = {"text": t_text, "lt_text": t_text, "image": image_protos[target] + 1.0 * rng.normal(size=(800, 8))}
    return model, feats, target, shifted


def test_co_training_lets_the_image_teach_the_text_what_the_texts_agree_wrongly_on(tmp_path):
    """``self_train.views: cross`` (co-training): a ``self_trained_text`` regression labelled by
    the image component where it is sure, a ``self_trained_image`` one labelled by the two text
    components together. Where the texts are wrong, joint self-training (labelled by the whole
    combination) learns their mistake on part of those products; co-training learns the new word
    from the images and puts more of them right (seeds 0-5 of this case: ahead or level on every one). Both regressions travel with the checkpoint, ``as_trained``
    removes both, and more than one round or ``keep: agree`` is refused."""
    from prodcat.models.config import SelfTrainSettings

    model, feats, target, shifted = _co_training_case()
    right = lambda m: (LEAVES[m.leaf_log_probs(feats).argmax(axis=1)] == target)  # noqa: E731
    assert right(model)[shifted].mean() < 0.8                             # the texts outvote the image
    joint = replace(model, model_config=model.model_config.model_copy(update={"decision": model.model_config.decision.model_copy(
        update={"self_train": SelfTrainSettings()})}))
    cross = model.adapt(feats)
    assert right(cross)[shifted].mean() > right(joint.adapt(feats))[shifted].mean() + 0.05
    assert right(cross)[shifted].mean() > right(model)[shifted].mean() + 0.1
    assert right(cross)[~shifted].mean() >= right(model)[~shifted].mean() - 0.02
    names = {c.name: c for c in cross.self_trained_components}
    assert set(names) == {"self_trained_text", "self_trained_image"}
    assert names["self_trained_text"].settings["features"] == ["text"]     # one per input, not lt_text too
    assert names["self_trained_text"].settings["taught_by"] == ["image"]
    assert names["self_trained_image"].settings["taught_by"] == ["lt_text", "text"]
    image_sure = np.exp(model.components[2].log_probs(feats["image"]).max(axis=1)) >= 0.8
    assert names["self_trained_text"].settings["fitted_on"] == int(image_sure.sum())
    assert {k: cross.combiner.weights[k] for k in names} == {"self_trained_text": 1.0, "self_trained_image": 1.0}
    cross.save(str(tmp_path / "m"))
    loaded = load_decision(str(tmp_path / "m"))
    assert np.allclose(loaded.leaf_log_probs(feats), cross.leaf_log_probs(feats), atol=1e-5)
    back = loaded.as_trained()
    assert [c.name for c in back.components] == ["text", "lt_text", "image"]
    assert set(back.combiner.weights) == {"text", "lt_text", "image"}
    assert len(loaded.adapt(feats).self_trained_components) == 2          # replaces, never stacks
    with pytest.raises(ValueError, match="set rounds: 1"):
        SelfTrainSettings(views="cross", rounds=2)
    with pytest.raises(ValueError, match="keep: agree"):
        SelfTrainSettings(views="cross", keep="agree")


def test_dawid_skene_recovers_the_voters_accuracies_from_their_agreement_alone():
    """One-coin Dawid-Skene by EM: three good voters and one that is right 25 % of the time, on
    products whose labels it never reads; the accuracies come back within 0.03, and
    :func:`vote_weights` scales the weights by their log-odds, keeping the sum."""
    from prodcat.models.decision import dawid_skene, vote_weights

    rng = np.random.default_rng(0)
    truth, classes = rng.integers(0, 20, 4000), 20
    accuracy = np.array([0.9, 0.75, 0.85, 0.25])
    right = rng.random((4000, 4)) < accuracy
    votes = np.where(right, truth[:, None], (truth[:, None] + rng.integers(1, classes, (4000, 4))) % classes)
    estimate, posterior = dawid_skene(votes, classes)
    assert np.abs(estimate - accuracy).max() < 0.03
    assert (posterior.argmax(axis=1) == truth).mean() > (votes[:, 0] == truth).mean()
    weights = vote_weights({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 0.5}, dict(zip("abcd", estimate)), classes)
    assert weights["a"] > weights["c"] > weights["b"] > 1.0 > weights["d"] and weights["e"] == 0.5
    assert sum(weights.values()) == pytest.approx(4.5)
    odds = np.log(estimate * (classes - 1) / (1 - estimate))
    assert weights["a"] / weights["d"] == pytest.approx(odds[0] / odds[3])
    with pytest.raises(ValueError, match="at least 3 voters"):
        dawid_skene(votes[:, :2], classes)
    with pytest.raises(ValueError, match=r"classes in \[0, 5\)"):
        dawid_skene(votes, 5)
    with pytest.raises(ValueError, match="init: expected"):
        dawid_skene(votes, classes, init=np.ones((10, classes)))


def _reweight_case(seed: int = 0):
    """Four components trained on a source platform where all four inputs are clean; on the target
    platform one of them (``d``) is shifted into noise."""
    rng = np.random.default_rng(seed)
    protos = {k: rng.normal(size=(len(TAX), 8)) for k in "abcd"}
    source = rng.choice(LEAVES, 400)
    comps = [component_kinds.get("linear").fit(k, k, protos[k][source] + 0.8 * rng.normal(size=(400, 8)),
                                               source, TAX, C=10.0) for k in "abcd"]
    config = ModelConfig(fusion="decision", modalities=list("abcd"), decision={"reweight": "dawid_skene"})
    model = DecisionModel(components=comps, combiner=Combiner({k: 1.0 for k in "abcd"}), taxonomy=TAX,
                          model_config=config, input_dims={k: 8 for k in "abcd"},
                          selection={"platforms": ["source"]})
    target = rng.choice(LEAVES, 600)
    feats = {k: protos[k][target] + 1.6 * rng.normal(size=(600, 8)) for k in "abc"}
    feats["d"] = protos["d"][rng.choice(LEAVES, 600)] + 0.8 * rng.normal(size=(600, 8))  # says nothing
    return model, feats, target


def test_reweighting_down_weights_the_component_that_disagrees_on_a_new_platform(tmp_path):
    """``model.decision.reweight: dawid_skene``: adapted to a new platform's unlabelled products,
    the component whose input says nothing there agrees with the others at chance, gets the lowest
    estimated accuracy and a weight below 1 (the others above; the sum kept), and the reweighted
    model is right more often. In-platform nothing changes; the checkpoint keeps the estimate, and
    a second adapt starts from the weights as trained."""
    model, feats, target = _reweight_case()
    assert model.adapts and model.self_training_features == []
    right = lambda m: (LEAVES[m.leaf_log_probs(feats).argmax(axis=1)] == target).mean()  # noqa: E731
    new = np.array(["target"] * 600, object)
    adapted = model.adapt(feats, platforms=new)
    record = adapted.selection["reweight"]
    assert record["adapted_on"] == 600 and record["weights_before"] == {k: 1.0 for k in "abcd"}
    assert min(record["accuracy"], key=record["accuracy"].get) == "d" and record["accuracy"]["d"] < 0.3
    weights = adapted.combiner.weights
    assert weights["d"] < 1.0 < min(weights[k] for k in "abc") and sum(weights.values()) == pytest.approx(4.0)
    assert right(adapted) > right(model) + 0.03
    same = model.adapt(feats, platforms=np.array(["source"] * 600, object))       # in-platform
    assert same.combiner.weights == model.combiner.weights and "reweight" not in same.selection
    adapted.save(str(tmp_path / "m"))
    loaded = load_decision(str(tmp_path / "m"))
    assert loaded.combiner.weights == pytest.approx(weights) and loaded.selection["reweight"]["accuracy"]["d"] < 0.3
    again = loaded.adapt(feats, platforms=new)                                   # from the weights as trained
    assert again.combiner.weights == pytest.approx(weights)
    assert loaded.as_trained().combiner.weights == model.combiner.weights
    two = replace(model, components=model.components[:2], combiner=Combiner({"a": 1.0, "b": 1.0}),
                  input_dims={"a": 8, "b": 8})
    with pytest.warns(UserWarning, match="at least 3 weighted components"):
        assert two.adapt(feats, platforms=new).combiner.weights == {"a": 1.0, "b": 1.0}


def _choice_on_a_balanced_set(priors: list[str]):
    """:func:`choose` over ``priors`` where logistic regressions fitted on rows 90 % of one leaf
    carry that prior (the TF-IDF SVM's scores do not) and the held-out products are balanced;
    returns the choice and the final training rows' labels."""
    from prodcat.train.config import TrainConfig
    from prodcat.train.decision import ComponentSpec, Fitter, HeldOut, choose

    rng = np.random.default_rng(0)
    c, n = len(LEAVES), 600
    fit_nodes = np.where(rng.random(3000) < 0.9, LEAVES[0], rng.choice(LEAVES[1:], 3000))
    log_pi = label_log_prior(LEAVES, fit_nodes)
    truth = rng.integers(0, c, n)
    scores = {}
    for name in ("text", "image", "lexical"):    # logistic regressions: prior + weak evidence
        evidence = rng.normal(size=(n, c))
        evidence[np.arange(n), truth] += 1.5
        scores[name] = evidence + (log_pi if name != "lexical" else 0.0)   # the SVM's: no prior
    heldout = HeldOut("cross_platform:b", _Rows(fit_nodes), _Rows(LEAVES[truth]))

    class Stub(Fitter):
        def cached(self, spec, setting, h):
            return True

        def heldout_scores(self, spec, setting, h):
            return scores[spec.name]

    config = TrainConfig.model_validate({"model": {"fusion": "decision", "modalities": ["text", "image", "lexical"],
                                                   "label_prior": "none", "decision": {
                                                       "priors": priors,
                                                       "decodings": ["best_path"], "choice": "max"}}})
    specs = [ComponentSpec("text", "linear", "text"), ComponentSpec("image", "linear", "image"),
             ComponentSpec("lexical", "lexical", "lexical")]
    final = np.array([LEAVES[1]] * 3 + [LEAVES[2]])
    return choose(Stub(config, TAX), specs, [heldout], final), final


def test_choose_removes_a_prior_the_held_out_products_do_not_share():
    """The prior correction is chosen on the held-out products (like the decoding), read from the
    held-out set's own fit rows, and the kept combiner carries the final training rows' prior
    (:func:`_choice_on_a_balanced_set`)."""
    choice, final = _choice_on_a_balanced_set(["none", "once", "uniform", "adapt"])
    equal = {c["prior"]: c["hF"] for c in choice.candidates if c["candidate"] == "equal"}
    assert set(equal) == {"none", "once", "uniform", "adapt"}
    assert equal["uniform"] > equal["once"] > equal["none"]          # each prior counted hurts
    assert equal["adapt"] >= equal["once"]       # the set's own (balanced) distribution, estimated
    best = max(equal, key=equal.get)
    assert choice.chosen["prior"] == best and choice.combiner.prior == best
    assert choice.combiner.target_log_prior is None                  # adapted later, to its target
    assert choice.combiner.carriers == {k: pytest.approx(1 / choice.temperatures[k]) for k in ("text", "image")}
    assert np.allclose(choice.combiner.log_prior, label_log_prior(LEAVES, final))
    alone = [c for c in choice.candidates if c["candidate"] == "text alone"]
    assert sorted(c["prior"] for c in alone) == ["adapt", "none", "uniform"]   # once = none for one
    assert {c["prior"] for c in choice.candidates if c["candidate"] == "lexical alone"} == {"none", "adapt"}


def test_choose_fits_the_share_of_a_prior_the_held_out_products_do_not_share():
    """``priors: [fitted]``: on balanced held-out products the share of the carried prior removed,
    fitted by log-likelihood, is near 1 (``uniform``) for equal weights; the kept combiner carries
    it, and the TF-IDF model alone, which carries no prior, is scored as ``none``."""
    choice, _ = _choice_on_a_balanced_set(["fitted"])
    equal = [c for c in choice.candidates if c["candidate"] == "equal"]
    assert [c["prior"] for c in equal] == ["fitted"] and equal[0]["prior_share"] > 0.8
    assert choice.combiner.prior == "fitted"
    assert choice.combiner.prior_share == pytest.approx(choice.chosen["prior_share"])
    uniform, _ = _choice_on_a_balanced_set(["uniform"])
    assert equal[0]["hF"] >= uniform.candidates[0]["hF"] - 0.02
    assert {c["prior"] for c in choice.candidates if c["candidate"] == "lexical alone"} == {"none"}
    assert "prior_share" not in next(c for c in choice.candidates if c["candidate"] == "lexical alone")


def test_the_fitted_prior_share_follows_the_held_out_label_distribution():
    """Two logistic-regression experts each hold ``log pi + log L_k`` (Gaussian evidence, so
    ``L_k`` is an exact likelihood). Products drawn under ``pi`` are scored best with one ``pi``
    (share 1/2 of the two carried: ``once``, the Bayes posterior); products drawn from a uniform
    label distribution with none (share 1: ``uniform``). :func:`fit_prior_share` finds each."""
    from prodcat.train.decision import fit_prior_share

    rng = np.random.default_rng(0)
    c, n, mu = len(LEAVES), 4000, 1.0
    pi = rng.dirichlet(np.full(c, 0.5))
    pi = (pi + 0.01) / (pi + 0.01).sum()
    log_pi = np.log(pi)
    carriers = {"e0": 1.0, "e1": 1.0}
    shares = {}
    for name, q in (("pi", pi), ("uniform", np.full(c, 1 / c))):
        y = rng.choice(c, n, p=q)
        experts = {}
        for k in range(2):
            x = rng.normal(size=(n, c))
            x[np.arange(n), y] += mu
            experts[f"e{k}"] = log_softmax(log_pi + mu * x)
        shares[name] = fit_prior_share([{"e0": 1.0, "e1": 1.0}], [experts], [y], [log_pi], carriers)
    assert shares["pi"] == pytest.approx(0.5, abs=0.1)
    assert shares["uniform"] > 0.9


def test_a_fitted_prior_share_lies_between_none_and_uniform_and_travels(tmp_path):
    """Share 0 combines as ``none``, share 1 as ``uniform``; a share goes with ``fitted`` only, in
    [0, 1]; the checkpoint keeps it."""
    rng = np.random.default_rng(1)
    log_pi = np.log(rng.dirichlet(np.ones(len(LEAVES))))
    parts = {k: log_softmax(rng.normal(size=(5, len(LEAVES))) + log_pi) for k in ("text", "lexical")}
    carriers = {"text": 1.0, "lexical": 0.5}

    def combined(prior: str, share: float | None = None) -> np.ndarray:
        return Combiner({"text": 1.0, "lexical": 1.0}, prior=prior, log_prior=log_pi, carriers=carriers,
                        prior_share=share).combine(parts)

    assert np.allclose(combined("fitted", 0.0), combined("none"))
    assert np.allclose(combined("fitted", 1.0), combined("uniform"))
    assert not np.allclose(combined("fitted", 0.5), combined("none"))
    for bad in ({"prior": "fitted"}, {"prior": "fitted", "prior_share": 1.5},
                {"prior": "uniform", "prior_share": 0.5}):
        with pytest.raises(ValueError, match="share"):
            Combiner({"text": 1.0}, log_prior=log_pi, carriers=carriers, **bad)
    model, feats = _model()
    model.combiner = Combiner({"text": 1.0, "lexical": 1.0}, prior="fitted", log_prior=log_pi.astype(np.float32),
                              carriers=carriers, prior_share=0.37)
    model.save(str(tmp_path / "m"))
    loaded = load_decision(str(tmp_path / "m"))
    assert loaded.combiner.prior == "fitted" and loaded.combiner.prior_share == pytest.approx(0.37)
    assert prior_label(loaded.combiner.record()) == "fitted share 0.37"
    assert prior_label(Combiner({"text": 1.0}).record()) == "none" and prior_label({}) == "none"
    assert np.allclose(loaded.leaf_log_probs(feats), model.leaf_log_probs(feats), atol=1e-5)


def _benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (a script, not a package), imported by path."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prior_slopes_script_measures_the_intercepts_share_of_the_prior():
    """benchmarks/prior_slopes.py's slope: a logistic regression's intercepts fitted on skewed
    labels follow log pi; intercepts unrelated to it do not; leaves without a prior are skipped."""
    from prodcat.models.components import LinearComponent

    module = _benchmark("prior_slopes")
    rng = np.random.default_rng(0)
    weights = np.array([0.6, 0.25, 0.1, 0.05])
    nodes = rng.choice(LEAVES[:4], 2000, p=weights)
    x = rng.normal(size=(2000, 8))                                # features carry no label
    comp = LinearComponent.fit("text", "text", x, nodes, TAX, C=10.0)
    log_pi = label_log_prior(LEAVES, nodes)
    slope, corr = module.intercept_slope(comp.tensors["intercept"], log_pi)
    assert slope == pytest.approx(1.0, abs=0.15) and corr > 0.99   # the prior sits in the intercepts
    flat, _ = module.intercept_slope(rng.normal(scale=1e-3, size=len(LEAVES)), log_pi)
    assert abs(flat) < 0.01
    with pytest.raises(ValueError, match="0 leaves with a prior"):   # one label: log pi = 0
        module.intercept_slope(np.zeros(len(LEAVES)), label_log_prior(LEAVES, nodes[:1]))


def test_combination_rules_script_combines_as_documented():
    """benchmarks/combination_rules.py: the sum rule is the log of the mean probability, the
    uniform corrections remove a carrier's prior, the max rule takes the most confident component
    per product, and the fitted gate is at least as likely as equal weights on its own sets."""
    rules = _benchmark("combination_rules")
    rng = np.random.default_rng(0)
    a, b = (log_softmax(rng.normal(scale=3, size=(50, 6))) for _ in range(2))
    pi = np.log(np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05]))
    mixed = rules.combine("sum", {"a": a, "b": b}, {}, pi)
    assert np.allclose(np.exp(mixed), (np.exp(a) + np.exp(b)))           # log of the summed probabilities
    flat = rules.combine("product-uniform", {"a": np.tile(2.0 * pi, (4, 1))}, {"a": 2.0}, pi)
    assert np.allclose(flat, 0.0)                                         # the carrier's prior is gone
    assert np.allclose(rules.combine("sum-uniform", {"a": np.tile(pi, (4, 1))}, {"a": 1.0}, pi),
                       np.log(1 / 6))
    sharp = log_softmax(np.where(np.arange(6) == 2, 10.0, 0.0)[None].repeat(50, 0))
    picked = rules.combine("max-rule", {"a": log_softmax(a * 0.01), "b": sharp}, {}, pi)
    assert np.array_equal(picked, sharp)                                  # b is the confident one
    with pytest.raises(ValueError, match="unknown rule"):
        rules.combine("median", {"a": a}, {}, pi)
    c = log_softmax(rng.normal(size=(50, 6)))                            # a third, prior-free component
    carriers = {"a": 2.0, "b": 0.5}
    for prior in ("none", "once", "uniform"):                            # the default's own Combiner
        expected = Combiner({"a": 1.0, "b": 1.0, "c": 1.0}, "best_path", prior, pi, carriers).combine(
            {"a": a, "b": b, "c": c})
        got = rules.combine("product" if prior == "none" else f"product-{prior}", {"a": a, "b": b, "c": c},
                            carriers, pi)
        assert np.array_equal(np.argmax(got, 1), np.argmax(expected, 1))
        assert np.allclose(got - got.max(1, keepdims=True), expected - expected.max(1, keepdims=True))
    three = {"a": a, "b": b, "c": c}                                     # product-em: prior adapt
    em = rules.combine("product-em", three, carriers, pi)
    adapted = Combiner({"a": 1.0, "b": 1.0, "c": 1.0}, "best_path", "adapt", pi, carriers).adapt(three)
    expected = adapted.combine(three)
    assert np.allclose(em - em.max(1, keepdims=True), expected - expected.max(1, keepdims=True), atol=1e-5)
    # a gate: component 0 is right when it is confident, component 1 is noise
    target = rng.integers(0, 6, 400)
    good = np.where(rng.random(400)[:, None] < 0.5, 8.0 * np.eye(6)[target], rng.normal(size=(400, 6)))
    stack = np.stack([log_softmax(good), log_softmax(rng.normal(scale=3, size=(400, 6)))])
    theta = rules.fit_gate([(stack, target)])

    def loglik(weights):
        z = log_softmax((weights[:, :, None] * stack).sum(0))
        return z[np.arange(400), target].mean()
    assert loglik(rules.gate_weights(theta, stack)) > loglik(np.ones((2, 400)))


def test_self_training_script_cross_fits_its_pseudo_labels():
    """benchmarks/self_training.py: a product's own pseudo-label never fits the regression that
    scores it (changing one group's labels leaves that group's scores as they were), every row is
    a distribution in which a leaf no kept product has keeps the smoothing's share, the selections
    keep what they say, and the nested score averages the pairs among the other platforms."""
    module = _benchmark("self_training")
    rng = np.random.default_rng(0)
    x, labels, groups = rng.normal(size=(60, 4)), rng.integers(0, 3, 60), np.repeat(np.arange(12), 5)
    kept = np.ones(60, bool)
    first = module.target_log_probs(x, labels, kept, groups, classes=5)
    assert np.allclose(np.exp(first).sum(axis=1), 1.0)
    assert np.allclose(np.exp(first[:, 3:]), module.SMOOTHING / 5)          # leaves 3, 4: no label
    flipped = labels.copy()
    flipped[groups == 3] = (labels[groups == 3] + 1) % 3
    second = module.target_log_probs(x, flipped, kept, groups, classes=5)
    assert np.allclose(first[groups == 3], second[groups == 3])             # its own labels: unread
    assert not np.allclose(first[groups != 3], second[groups != 3])         # the others read them
    some = kept & (groups != 3)
    assert np.allclose(module.target_log_probs(x, flipped, some, groups, classes=5),
                       module.target_log_probs(x, labels, some, groups, classes=5))   # not kept: unread
    with pytest.raises(ValueError, match="2 or more"):
        module.target_log_probs(x, labels, kept, np.zeros(60), classes=5)
    whole = module.target_log_probs(x, flipped, kept, groups, classes=5, folds=1)   # no cross-fitting
    assert not np.allclose(whole[groups == 3], second[groups == 3])         # its own labels: read

    combined = np.log(np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.1, 0.85, 0.05]]))
    parts = {"text": np.log(np.array([[0.6, 0.2, 0.2], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])),
             "lexical": combined}
    assert module.pseudo_labels(combined, parts, "conf0.8")[1].tolist() == [True, False, True]
    labels, agree = module.pseudo_labels(combined, parts, "agree")
    assert labels.tolist() == [0, 0, 1] and agree.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="unknown selection"):
        module.pseudo_labels(combined, parts, "all")

    def fold(name, hf):
        return {"fold": name, "default": hf, "variants": {"v": hf + 0.1}}
    scores = module.nested([fold("val_a_to_b", 0.8), fold("val_b_to_a", 0.6), fold("val_a_to_c", 0.1),
                            fold("in_platform_val", 0.9)])
    assert scores["nested_c"] == pytest.approx({"default": 0.7, "v": 0.8})
    assert scores["nested_b"] == pytest.approx({"default": 0.1, "v": 0.2})

    from types import SimpleNamespace
    evaluate = SimpleNamespace(train=SimpleNamespace(data=SimpleNamespace(
        train_split="train", val_split="val", calib_split="calib")))

    def fold_of(train, test, splits):
        return SimpleNamespace(name="f", train_platforms=train, test_platforms=test, test_splits=splits)
    assert module.pool_splits(evaluate, fold_of(["a"], ["b"], ["val"])) == ["val", "calib", "train"]
    assert module.pool_splits(evaluate, fold_of(["a", "b"], ["a", "b"], ["val"])) == ["val", "calib"]
    with pytest.raises(SystemExit, match="--pool split"):                 # never the test split
        module.pool_splits(evaluate, fold_of(["a"], ["b"], ["test"]))
    with pytest.raises(SystemExit, match="--pool split"):                 # LOPO: every split
        module.pool_splits(evaluate, fold_of(["a"], ["b"], None))


def test_equal_weights_per_modality_share_one_weight_among_the_components_reading_one_input():
    from prodcat.models.decision import equal_weights, input_modality

    preset = {"lexical": "lexical", "text": "text", "hr_image": "hr_image", "label": "text"}
    assert equal_weights(preset) == {k: 1.0 for k in preset}
    assert equal_weights(preset, "per_modality") == pytest.approx(
        {"lexical": 1 / 3, "text": 1 / 3, "label": 1 / 3, "hr_image": 1.0})
    finetuned = {"lexical": "lexical", "text": "text", "ft_text": "ft_text", "image": "image",
                 "clip": "clip", "label": "text"}
    weights = equal_weights(finetuned, "per_modality")
    assert weights["ft_text"] == pytest.approx(0.25) and weights["image"] == weights["clip"] == 1.0
    assert sum(weights.values()) == pytest.approx(3.0)                  # one per input modality
    assert [input_modality(f) for f in ("lt_text", "hr_image", "clip")] == ["text", "image", "clip"]
    with pytest.raises(ValueError, match="per_modality"):
        equal_weights(preset, "per_view")


def test_choose_weighs_equal_weights_per_component_or_per_input_modality():
    """Three text components that share one mistake (on half the products they all prefer one
    wrong leaf) and an image component right on 80 % of the products, its mistakes independent of
    the text's: counted per component, the shared text evidence outvotes the image; per modality
    it counts once, and the image decides where the two disagree."""
    from prodcat.train.config import TrainConfig
    from prodcat.train.decision import ComponentSpec, Fitter, HeldOut, choose

    rng = np.random.default_rng(0)
    c, n = len(LEAVES), 1000
    truth = rng.integers(0, c, n)
    wrong = (truth + rng.integers(1, c, n)) % c
    text = rng.normal(scale=0.1, size=(n, c))
    text[np.arange(n), np.where(rng.random(n) < 0.5, wrong, truth)] += 3.0
    image = rng.normal(scale=0.1, size=(n, c))
    image[np.arange(n), np.where(rng.random(n) < 0.8, truth, (truth + rng.integers(1, c, n)) % c)] += 3.0
    scores = {"lexical": text, "text": text, "label": text, "hr_image": image}
    nodes = np.array(LEAVES)[truth]
    heldout = HeldOut("cross_platform:b", _Rows(nodes), _Rows(nodes))

    class Stub(Fitter):
        def cached(self, spec, setting, h):
            return True

        def heldout_scores(self, spec, setting, h):
            return scores[spec.name]

    specs = [ComponentSpec("text", "linear", "text"), ComponentSpec("hr_image", "linear", "hr_image"),
             ComponentSpec("lexical", "lexical", "lexical"), ComponentSpec("label", "label", "text")]
    chosen = {}
    for mode in ("per_component", "per_modality"):
        config = TrainConfig.model_validate({"model": {
            "fusion": "decision", "modalities": ["text", "hr_image", "lexical"], "label_prior": "none",
            "decision": {"combiner": "equal", "equal_weights": mode, "decodings": ["best_path"]}}})
        chosen[mode] = choose(Stub(config, TAX), specs, [heldout], nodes)
    assert chosen["per_component"].combiner.weights == {"text": 1.0, "hr_image": 1.0, "lexical": 1.0, "label": 1.0}
    assert chosen["per_modality"].combiner.weights == pytest.approx(
        {"text": 1 / 3, "hr_image": 1.0, "lexical": 1 / 3, "label": 1 / 3})
    assert chosen["per_modality"].heldout_hf > chosen["per_component"].heldout_hf + 0.15
