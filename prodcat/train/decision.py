"""Fitting a decision-level fusion model, every choice made on products its parts were not fit on.

For the training rows R (the ``train`` split of the platforms S in ``data.platforms``, subsampled
to ``data.max_train_products``), :func:`train_decision`:

1. builds the *held-out sets* (``model.decision.heldout``): ``cross_platform``: for each platform
   Q in S (when S has two or more), the components are fitted on R without Q and predict Q's
   training rows whose category the others have (a leave-one-platform-out inside the training
   platforms); ``in_platform``: fitted on R, they predict the ``val`` split of S. At most
   ``heldout_per_platform`` products per platform and set (seeded);
2. chooses each component's settings (``linear_C``, ``lexical_grid``) by the mean held-out hF of
   that component alone;
3. fits each component's temperature (held-out negative log-likelihood), then the combiner's
   weights (maximum held-out log-likelihood of the combination, ``w >= 0``, scipy's L-BFGS-B);
4. keeps, of the fitted weights, equal weights and every component alone, each with every label
   prior correction in ``priors`` (:class:`prodcat.models.decision.Combiner`; the prior of each
   held-out set's fit rows; ``adapt`` estimates each set's own label distribution from its
   unlabelled scores, as a test fold or a new platform is adapted to later; ``fitted`` removes the
   share of it that maximises the held-out log-likelihood, :func:`fit_prior_share`) and every decoding in ``decodings``, by ``choice``: ``paired`` (the
   default) equal weights unless another candidate beats them on the held-out products by a real
   difference (paired bootstrap over near-duplicate groups), then the best of those (with
   ``prior_base``, equal weights with that prior correction are the base, and another correction
   must beat them by a real difference too; with ``agreement: every_set`` the base is kept
   unless one of those is a component alone or is level or ahead on each held-out set); ``max``
   the best mean held-out hF. With
   ``crossfit`` (the default) the fitted weights are scored out of sample: each held-out set by
   weights fitted on the other sets; the kept weights are those fitted on all of them. Either way,
   on held-out products the model is never below its best component by a real difference;
5. refits the chosen components on all of R, fits the global temperature on the ``calib`` split of
   S (the serving logits, :mod:`prodcat.train.calibration`) and writes the checkpoint.

Nothing else is read: in a leave-one-platform-out fold (``data.platforms`` = the other platforms)
no product of the held-out platform is read before its test. (With ``adapt`` chosen, the
evaluation adapts the trained model to the test products' inputs, never their labels, before
predicting them: :func:`prodcat.evaluate.grid.run_model`.) Each step reports the products it
reads to :mod:`prodcat.core.audit`, which the evaluation's tests check.

Letters: B products, C label leaves, K components.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from prodcat.core import audit, storage
from prodcat.core.metrics import hierarchical_counts, prf_from_counts
from prodcat.core.taxonomy import Taxonomy
from prodcat.models.components import (
    Component,
    LabelComponent,
    LinearComponent,
    ScoresComponent,
    log_softmax,
)
from prodcat.models.config import DecisionSettings
from prodcat.models.decision import (
    Combiner,
    DecisionModel,
    TreeDecoder,
    equal_weights,
    label_log_prior,
    prior_coefficient,
)
from prodcat.models.files import CONFIG
from prodcat.models.gate import LabelSpaceGate
from prodcat.models.lexical import FEATURE as LEXICAL
from prodcat.models.lexical import LexicalConfig, LexicalScorer, _hstack, analyzers, make_vectorizer
from prodcat.train.config import TrainConfig, run_prefix
from prodcat.train.features import PRESENT_PREFIX, TEXT, FeatureTable, select_train_rows
from prodcat.train.result import TrainResult

LABEL = "label"


# ---------------------------------------------------------------------------------- held-out sets
@dataclass
class HeldOut:
    """One held-out set: components fitted on ``fit`` predict ``rows``."""

    name: str                 # "cross_platform:<Q>" or "in_platform"
    fit: FeatureTable
    rows: FeatureTable


def heldout_sets(table: FeatureTable, train: FeatureTable, settings: DecisionSettings,
                 val_split: str, seed: int, features: list[str] | None = None) -> list[HeldOut]:
    """The held-out sets of :func:`train_decision` (step 1).

    Args:
        table: every row of the training platforms (all splits).
        train: the training rows R.
        features: the features the components read: a product whose label the encoder of one of
            them was trained on (:attr:`FeatureTable.trained_on`, a fine-tuned encoder's training
            rows) is in no held-out set, so a fine-tuned component is not scored on products it
            has learnt (it may still be fitted on them). The cross-platform set of Q reads the
            version of a feature made without Q where the table has one
            (:meth:`FeatureTable.for_heldout`; its trained-on products are then those left out).

    Raises:
        ValueError: when no held-out set can be built (one platform and no validation rows).
    """
    rng = np.random.default_rng(seed)
    sets = []
    platforms = sorted(np.unique(train.column("platform")).tolist())
    read = list(features or [])
    if "cross_platform" in settings.heldout and len(platforms) >= 2:
        for q in platforms:
            view = train.for_heldout(q)
            _check_variant_rows(train, view, q, read)
            others = view.where(view.column("platform") != q)
            mine = view.where(view.column("platform") == q)
            covered = mine.where(np.isin(mine.column("node"), others.column("node")) & ~mine.seen_by(read))
            covered = _cap(covered, settings.heldout_per_platform, rng)
            if len(covered) and len(np.unique(others.column("node"))) >= 2:
                sets.append(HeldOut(f"cross_platform:{q}", others, covered))
    if "in_platform" in settings.heldout:
        train = train.without_variants()
        val = table.without_variants().rows(splits=[val_split])
        val = val.where(np.isin(val.column("node"), train.column("node")) & ~val.seen_by(read))
        parts = [_cap(val.where(val.column("platform") == p), settings.heldout_per_platform, rng)
                 for p in platforms]
        keep = np.isin(val.column("product_id"), np.concatenate([p.column("product_id") for p in parts]))
        if keep.any():
            sets.append(HeldOut("in_platform", train, val.where(keep)))
    if not sets:
        raise ValueError(f"decision-level fusion found no held-out products to choose on: training "
                         f"platforms {platforms}, heldout={settings.heldout}; add a platform or "
                         f"validation rows ({val_split!r} split)")
    return sets


def _check_variant_rows(train: FeatureTable, view: FeatureTable, q: str, features: list[str]) -> None:
    """Refuse a variant (``data.variants``) of a feature for ``q`` that lacks training rows the
    table has the feature for: ``q``'s cross-platform held-out set fits its components on the
    other platforms' training rows and predicts ``q``'s, all read from the variant.

    Raises:
        ValueError: names the feature, the platform, how many rows lack it and how to embed them.
    """
    for f in features:
        if q not in train.variants.get(f, {}):
            continue
        base, mine = train.column(PRESENT_PREFIX + f).astype(bool), view.column(PRESENT_PREFIX + f).astype(bool)
        lacking = base & ~mine
        if lacking.any():
            where = sorted(np.unique(train.column("platform")[lacking]).tolist())
            raise ValueError(
                f"data.variants: the {f!r} store for {q}'s held-out set lacks {int(lacking.sum()):,} "
                f"of the {int(base.sum()):,} training rows (platforms {', '.join(where)}; e.g. "
                f"{train.column('product_id')[lacking][0]}): the set fits on the other platforms' "
                "training rows and predicts its own, all from that store; embed the training split "
                "with that encoder (prodcat embed --splits train)")


def _cap(rows: FeatureTable, n: int, rng: np.random.Generator) -> FeatureTable:
    if len(rows) <= n:
        return rows
    keep = np.zeros(len(rows), bool)
    keep[rng.choice(len(rows), n, replace=False)] = True
    return rows.where(keep)


# ---------------------------------------------------------------------------------- components
@dataclass
class ComponentSpec:
    """A component to fit: its name, kind, input feature and the settings to choose from."""

    name: str
    kind: str                 # linear | lexical | label
    feature: str
    candidates: list[dict] = field(default_factory=lambda: [{}])


def component_specs(config: TrainConfig) -> list[ComponentSpec]:
    """One spec per modality (``lexical``: the TF-IDF + linear model with its grid; any other: a
    logistic regression with ``linear_C``), plus ``label`` when the label prior is on."""
    model, d = config.model, config.model.decision
    specs = []
    for m in model.modalities:
        if m == LEXICAL:
            grid = d.lexical_grid or [{}]
            specs.append(ComponentSpec(LEXICAL, "lexical", LEXICAL, [dict(g) for g in grid]))
        else:
            specs.append(ComponentSpec(m, "linear", m, [{"C": c} for c in d.linear_C]))
    if model.label_prior != "none":
        specs.append(ComponentSpec(LABEL, "label", model.label_prior_feature, [{}]))
    return specs


class Fitter:
    """Fits components on rows of one label space; caches TF-IDF matrices and held-out scores.

    Args:
        config: the training config (lexical base settings, decision settings, seed).
        taxonomy: the label space (its leaves are every component's outputs).
        label_embeddings: ``[N, D]`` per node for the ``label`` component, or None.
    """

    #: held-out scores kept across fits in this process (an evaluation fits the same component
    #: on the same rows for several models): ``{key: [B, C] float32}``, least recently used out
    _scores: OrderedDict = OrderedDict()
    MAX_CACHED = 64
    #: fitted components kept across fits in this process (the in-platform held-out set's fits are
    #: the final fits; an evaluation's models share them): ``{key: (component, scorer)}``
    _fits: OrderedDict = OrderedDict()
    MAX_FITS = 6

    def __init__(self, config: TrainConfig, taxonomy: Taxonomy,
                 label_embeddings: np.ndarray | None = None) -> None:
        self.config, self.taxonomy = config, taxonomy
        self.settings = config.model.decision
        self.leaves = np.sort(taxonomy.leaves)
        self.label_embeddings = label_embeddings
        self._vectorized: dict = {}

    def lexical_config(self, overrides: dict) -> LexicalConfig:
        data = {**self.config.lexical.model_dump(), **overrides, "seed": self.config.optim.seed}
        return LexicalConfig.model_validate(data)

    def fit(self, spec: ComponentSpec, setting: dict, rows: FeatureTable,
            step: str) -> tuple[Component, LexicalScorer | None]:
        """``(component, lexical scorer or None)`` fitted on ``rows``.

        Raises:
            ValueError: fewer than 2 labels in ``rows``, or a label component without label
                embeddings.
        """
        audit.read(f"fit:{spec.name}@{step}", rows.column("product_id"))
        key = self._key(spec, setting, rows)
        if key in Fitter._fits:
            Fitter._fits.move_to_end(key)
            comp, scorer = Fitter._fits[key]
            return copy.deepcopy(comp), scorer          # components get their own temperature
        comp, scorer = self._fit(spec, setting, rows)
        Fitter._fits[key] = (comp, scorer)
        while len(Fitter._fits) > self.MAX_FITS:
            Fitter._fits.popitem(last=False)
        return copy.deepcopy(comp), scorer

    def _key(self, spec: ComponentSpec, setting: dict, rows: FeatureTable) -> tuple:
        return (spec.name, spec.kind, spec.feature, rows.versions.get(spec.feature, ""),
                json.dumps(setting, sort_keys=True),
                self.settings.structure, self.settings.max_iter, self.config.optim.seed,
                json.dumps(self.config.lexical.model_dump(), sort_keys=True) if spec.kind == "lexical" else "",
                _digest(self.leaves.astype(str)), _digest(rows.column("product_id")))

    def _fit(self, spec: ComponentSpec, setting: dict,
             rows: FeatureTable) -> tuple[Component, LexicalScorer | None]:
        nodes = rows.column("node")
        if spec.kind == "lexical":
            scorer = self._fit_lexical(self.lexical_config(setting), rows)
            comp = ScoresComponent.fit(spec.name, spec.feature, self.taxonomy, **setting)
            comp.settings = {"lexical": scorer.config.model_dump(), "describe": scorer.config.describe()}
            return comp, scorer
        if spec.kind == "label":
            if self.label_embeddings is None:
                raise ValueError("the label component needs label embeddings (label_prior on a store "
                                 "made by `prodcat embed`)")
            return LabelComponent.fit(spec.name, spec.feature, self.taxonomy, self.label_embeddings), None
        feats, present, _ = rows.with_features([spec.feature]).arrays()
        keep = present[spec.feature]
        return LinearComponent.fit(
            spec.name, spec.feature, feats[spec.feature][keep], nodes[keep], self.taxonomy,
            C=float(setting["C"]), structure=self.settings.structure, max_iter=self.settings.max_iter,
            seed=self.config.optim.seed), None

    def _fit_lexical(self, config: LexicalConfig, rows: FeatureTable) -> LexicalScorer:
        texts = rows.column(TEXT).tolist()
        key = (json.dumps({k: v for k, v in config.model_dump().items() if k not in ("C", "seed", "folds")},
                          sort_keys=True), _digest(rows.column("product_id")))
        if key not in self._vectorized:
            vectorizers = {kind: make_vectorizer(config, kind, min_df=min(config.min_df, len(texts)))
                           for kind in analyzers(config)}
            x = _hstack([v.fit_transform(texts) for v in vectorizers.values()])
            self._vectorized[key] = (vectorizers, x)
            while len(self._vectorized) > 8:                     # sparse matrices: a few MiB each
                self._vectorized.pop(next(iter(self._vectorized)))
        vectorizers, x = self._vectorized[key]
        return LexicalScorer(config).fit_matrix(x, rows.column("node"), self.leaves, vectorizers)

    def raw_scores(self, comp: Component, scorer: LexicalScorer | None, rows: FeatureTable,
                   step: str) -> np.ndarray:
        """Uncalibrated scores ``[B, C]`` of a fitted component on ``rows`` (absent inputs: 0)."""
        audit.read(f"predict:{comp.name}@{step}", rows.column("product_id"))
        if scorer is not None:
            return scorer.scores(rows.column(TEXT).tolist()).astype(np.float64)
        feats, present, _ = rows.with_features([comp.feature]).arrays()
        out = comp.scores(feats[comp.feature])
        out[~present[comp.feature]] = 0.0                       # uniform after the softmax
        return out

    def _scores_key(self, spec: ComponentSpec, setting: dict, h: HeldOut) -> tuple:
        return (*self._key(spec, setting, h.fit), _digest(h.rows.column("product_id")))

    def cached(self, spec: ComponentSpec, setting: dict, h: HeldOut) -> bool:
        """True when :meth:`heldout_scores` would not fit anything."""
        return self._scores_key(spec, setting, h) in Fitter._scores

    def store(self, spec: ComponentSpec, setting: dict, h: HeldOut, scores: np.ndarray) -> None:
        """Keep held-out scores computed elsewhere (a Ray task, :func:`prefetch`)."""
        Fitter._scores[self._scores_key(spec, setting, h)] = np.asarray(scores, np.float32)
        while len(Fitter._scores) > self.MAX_CACHED:
            Fitter._scores.popitem(last=False)

    def heldout_scores(self, spec: ComponentSpec, setting: dict, h: HeldOut) -> np.ndarray:
        """Raw scores ``[B_h, C]`` of ``spec`` with ``setting``, fitted on ``h.fit``, on ``h.rows``
        (cached per component, setting, fit rows and predicted rows)."""
        key = self._scores_key(spec, setting, h)
        cached = Fitter._scores.get(key)
        if cached is not None:
            Fitter._scores.move_to_end(key)
            audit.read(f"fit:{spec.name}@{h.name}", h.fit.column("product_id"))
            audit.read(f"predict:{spec.name}@{h.name}", h.rows.column("product_id"))
            return cached
        comp, scorer = self.fit(spec, setting, h.fit, h.name)
        scores = self.raw_scores(comp, scorer, h.rows, h.name).astype(np.float32)
        Fitter._scores[key] = scores
        while len(Fitter._scores) > self.MAX_CACHED:
            Fitter._scores.popitem(last=False)
        return scores


def _digest(values) -> str:
    return hashlib.sha1("\n".join(map(str, values)).encode()).hexdigest()


def _remote_scores(config: dict, taxonomy: str, label_embeddings, spec: ComponentSpec,
                   settings: list[dict], h: HeldOut) -> list[np.ndarray]:
    """A Ray task: the held-out scores of ``spec`` under each of ``settings`` on ``h`` (one
    vectorization of the text shared by the settings)."""
    fitter = Fitter(TrainConfig.model_validate(config), Taxonomy.from_json(taxonomy), label_embeddings)
    return [fitter.heldout_scores(spec, setting, h) for setting in settings]


def prefetch(fitter: Fitter, specs: list[ComponentSpec], sets: list[HeldOut]) -> None:
    """Fit the cross-platform held-out sets' components in parallel Ray tasks (one per component
    and set, 1 CPU each) while this process fits the in-platform set (whose fits are the final
    ones, kept here); a no-op without a running Ray or with fewer than two tasks. The reads are
    reported here, where :mod:`prodcat.core.audit` records them."""
    import ray

    jobs = [(spec, [s for s in spec.candidates if not fitter.cached(spec, s, h)], h)
            for spec in specs if spec.kind != "label" for h in sets if h.name != "in_platform"]
    jobs = [job for job in jobs if job[1]]
    if not fitter.settings.parallel or len(jobs) < 2 or not ray.is_initialized():
        return
    config, taxonomy = fitter.config.model_dump(mode="json"), fitter.taxonomy.to_json()
    labels = None if fitter.label_embeddings is None else ray.put(fitter.label_embeddings)
    refs = {h.name: ray.put(h) for h in sets}
    task = ray.remote(num_cpus=1, max_retries=1)(_remote_scores)
    futures = [task.remote(config, taxonomy, labels, spec, settings, refs[h.name])
               for spec, settings, h in jobs]
    for spec, settings, h in jobs:
        audit.read(f"fit:{spec.name}@{h.name}", h.fit.column("product_id"))
        audit.read(f"predict:{spec.name}@{h.name}", h.rows.column("product_id"))
    for spec in specs:                       # meanwhile, here: the in-platform set (final fits)
        for h in sets:
            if h.name == "in_platform":
                for setting in spec.candidates:
                    fitter.heldout_scores(spec, setting, h)
    for (spec, settings, h), future in zip(jobs, futures):
        for setting, scores in zip(settings, ray.get(future)):
            fitter.store(spec, setting, h, scores)


# ---------------------------------------------------------------------------------- choices
def heldout_hf(taxonomy: Taxonomy, decoder: TreeDecoder, log_p: np.ndarray, nodes: np.ndarray,
               decoding: str) -> float:
    """hF of the decoded paths of ``log_p [B, C]`` against label nodes ``[B]``."""
    classes = decoder.decode(log_p, decoding)
    return prf_from_counts(*hierarchical_counts(taxonomy, nodes, classes).sum(axis=0))["hF"]


def fit_temperature(scores: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """T > 0 minimising the mean (per held-out set) negative log-likelihood of
    ``log_softmax(scores / T)`` at the true leaf (``targets``: leaf positions ``[B]``)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        return float(np.mean([-log_softmax(s, np.exp(log_t))[np.arange(len(t)), t].mean()
                              for s, t in zip(scores, targets)]))
    return float(np.exp(minimize_scalar(nll, bounds=(np.log(1e-3), np.log(1e3)), method="bounded").x))


def fit_weights(log_probs: list[dict[str, np.ndarray]], targets: list[np.ndarray],
                names: list[str]) -> dict[str, float]:
    """Weights ``w >= 0`` maximising the mean (per held-out set) log-likelihood of
    ``softmax(sum_k w_k log p_k)`` at the true leaf (L-BFGS-B with its analytic gradient)."""
    from scipy.optimize import minimize

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = 0.0, np.zeros(len(w))
        for lp, t in zip(log_probs, targets):
            stack = np.stack([lp[n] for n in names])                   # [K, B, C]
            z = np.tensordot(w, stack, axes=1)                         # [B, C]
            q = np.exp(log_softmax(z))
            rows = np.arange(len(t))
            loss -= (log_softmax(z)[rows, t]).mean()
            grad -= (stack[:, rows, t] - np.einsum("bc,kbc->kb", q, stack)).mean(axis=1)
        return loss / len(targets), grad / len(targets)

    result = minimize(objective, np.ones(len(names)), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, 20.0)] * len(names))
    return {n: float(w) for n, w in zip(names, result.x)}


def crossfit_weights(log_probs: list[dict[str, np.ndarray]], targets: list[np.ndarray],
                     names: list[str]) -> list[dict[str, float]]:
    """Per held-out set j, the weights :func:`fit_weights` fits on every held-out set but j
    (cross-fitting): scoring set j with them measures fitted weights on products they were not
    fitted on, so the paired test of :func:`pick` compares them with equal weights out of sample.

    Raises:
        ValueError: fewer than 2 held-out sets (nothing to leave out).
    """
    if len(log_probs) < 2:
        raise ValueError(f"cross-fitting needs 2 or more held-out sets, got {len(log_probs)}")
    return [fit_weights([lp for i, lp in enumerate(log_probs) if i != j],
                        [t for i, t in enumerate(targets) if i != j], names)
            for j in range(len(log_probs))]


def fit_prior_share(weights: list[dict[str, float]], log_probs: list[dict[str, np.ndarray]],
                    targets: list[np.ndarray], set_priors: list[np.ndarray],
                    carriers: dict[str, float]) -> float:
    """The share ``lambda`` in [0, 1] of the carried training label prior that a ``fitted``
    :class:`Combiner` removes (0: ``none``, 1: ``uniform``), minimising the mean (per held-out set)
    negative log-likelihood of the combination at the true leaf, as :func:`fit_temperature` fits a
    temperature (bounded Brent search, scipy). Meant as a smooth choice where the discrete
    corrections are nearly tied on held-out hF; stop 58's validation round found log-likelihood and
    hF disagreeing and ``lambda`` moving with the training draw (docs/evaluation.md), so the
    default keeps the discrete corrections with ``prior_base`` instead.

    Args:
        weights: per held-out set, the combination's weights (one dict repeated, or cross-fitted).
        log_probs: per set, ``{component: [B, C]}`` calibrated log-probabilities.
        targets: per set, leaf positions ``[B]``; ``set_priors``: per set, ``log pi [C]`` of what its
            components were fitted on; ``carriers``: :func:`prior_carriers`.
    """
    from scipy.optimize import minimize_scalar

    def nll(share: float) -> float:
        return float(np.mean([-Combiner(w, "greedy", "fitted", pi, carriers, prior_share=float(share))
                              .combine(lp)[np.arange(len(t)), t].mean()
                              for w, pi, lp, t in zip(weights, set_priors, log_probs, targets)]))
    return float(np.clip(minimize_scalar(nll, bounds=(0.0, 1.0), method="bounded",
                                         options={"xatol": 1e-4}).x, 0.0, 1.0))


def prior_carriers(specs: list[ComponentSpec], temperatures: dict[str, float]) -> dict[str, float]:
    """``{component: 1 / T}``: the components whose log-probabilities carry the training label
    prior, and the share of ``log pi`` they carry after their temperature ``T``. Those are the
    logistic regressions (``linear``: maximum likelihood, an unpenalised intercept). Not the
    zero-shot ``label``, and not the TF-IDF model: LinearSVC's hinge loss estimates no
    probabilities and liblinear penalises its intercept, whose slope against ``log pi`` was 0.006
    on the H&M + Myntra training rows (benchmarks/prior_slopes.py); counting it at ``1 / T``
    (``T`` ~ 0.1) took 9 times ``log pi`` off every combination."""
    return {s.name: 1.0 / temperatures[s.name] for s in specs if s.kind == "linear" and s.name in temperatures}


def distinct_priors(weights: dict[str, float], priors: list[str], carriers: dict[str, float]) -> list[str]:
    """The prior corrections of ``priors`` that change the combination of ``weights``: one
    carrier alone counts the prior once already (``once`` = ``none``), and with no carrier nothing
    changes, so those repeats are not scored twice (``adapt`` also adds the set's estimated label
    distribution, so it is never a repeat; ``fitted`` is fitted per weighting, and stands for
    ``none`` when nothing weighted carries the prior). The first of ``priors`` is always kept."""
    kept, seen = [], set()
    carried = any(w > 0 and k in carriers for k, w in weights.items())
    for prior in priors:            # adapt adds an estimate and fitted is fitted: never a repeat
        if prior == "fitted" and not carried:
            prior = "none"            # nothing carries the prior: a share of it changes nothing
        if prior == "fitted":
            kept.append(prior)
            continue
        key = (prior == "adapt", round(prior_coefficient(weights, prior, carriers), 9))
        if key not in seen:
            kept.append(prior)
            seen.add(key)
    return kept


def adapted(combiner: Combiner, log_probs: dict[str, np.ndarray]) -> Combiner:
    """``combiner`` adapted to the held-out set ``log_probs`` itself when its prior is ``adapt``
    (the set's labels are not read: :meth:`prodcat.models.decision.Combiner.adapt`)."""
    return combiner.adapt(log_probs) if combiner.prior == "adapt" else combiner


def pick(candidates: list[dict], counts: list[np.ndarray], groups: np.ndarray, rule: str,
         seed: int = 0, out_of_sample_only: bool = False, prior_base: str | None = None,
         agreement: str = "pooled") -> dict:
    """The chosen candidate (step 4), by ``rule`` (``DecisionSettings.choice``).

    ``max``: the highest mean held-out hF (the first of equals). ``paired``: the best equal-weights
    candidate (over decodings), unless other candidates beat it on the pooled held-out products by
    a real difference (:func:`prodcat.core.uncertainty.paired_difference` over near-duplicate
    ``groups``: the 95 % interval of hF(candidate) - hF(equal) above 0); then the best of those.
    Equal weights need no fitting, so they are what the held-out products must argue against:
    with a few hundred held-out products of another shop, fitted weights overfit them
    (docs/evaluation.md). Each candidate gets ``vs_equal`` ``[estimate, low, high]``. With
    ``out_of_sample_only`` (``crossfit``), a candidate marked ``out_of_sample: False`` (fitted
    weights that could not be cross-fitted: one held-out set) cannot replace equal weights. With
    ``prior_base`` (``DecisionSettings.prior_base``), the paired rule's base is the best
    equal-weights candidate *with that prior correction* (over decodings), and an equal-weights
    candidate with another correction must beat it by a real difference too, as fitted weights
    must; where no equal-weights candidate has that correction (``distinct_priors`` dropped it as
    a repeat), every one is the base's, as without it. With ``agreement`` ``every_set``
    (``DecisionSettings.agreement``, stop 62), the base is left only if one of those winners
    agrees: a component alone (the pooled difference is enough, so the model is still never
    below its best component on the pooled held-out products by a real difference), another
    decoding of the base's weights and correction, or fitted weights or another prior correction
    whose hF is not below the base's on each held-out set by itself (``per_set``: the validation
    split, or a few hundred products of another shop read by models fitted on a few hundred, can
    each argue against them; each such candidate gets ``every_set`` True or False). When it is
    left, the choice is the pooled rule's (the best winner), so the choice is always the pooled
    rule's or the base. With one held-out set (one training platform) this is the pooled rule.

    Args:
        counts: per candidate, hierarchical counts ``[B, 3]`` of every held-out product (the sets
            concatenated in order; for cross-fitted weights, each set scored by the weights fitted
            on the others: :func:`crossfit_weights`); ``groups``: their group ids ``[B]``.
    """
    from prodcat.core.uncertainty import paired_difference

    best = max(candidates, key=lambda c: c["hF"])
    equal = [i for i, c in enumerate(candidates) if c["candidate"] == "equal"]
    if rule == "max" or not equal:
        return best
    based = [i for i in equal if candidates[i].get("prior") == prior_base]
    equal = based or equal
    base = max(equal, key=lambda i: candidates[i]["hF"])
    winners = []
    for i, c in enumerate(candidates):
        if i == base:
            c["vs_equal"] = [0.0, 0.0, 0.0]
            continue
        diff = paired_difference(counts[i], counts[base], groups, n_resamples=1000, seed=seed)
        c["vs_equal"] = [diff.estimate, diff.low, diff.high]
        agrees = True
        leaves_base = c["candidate"] == "fitted" or (
            c["candidate"] == "equal" and c.get("prior") != candidates[base].get("prior"))
        if agreement == "every_set" and leaves_base:
            mine, theirs = c.get("per_set", {}), candidates[base].get("per_set", {})
            agrees = c["every_set"] = all(mine[k] >= theirs[k] for k in theirs)
        if diff.low > 0 and (c.get("out_of_sample", True) or not out_of_sample_only):
            winners.append((c, agrees))
    if not any(ok for _, ok in winners):       # (none, or none every set agrees on)
        return candidates[base]
    return max((c for c, _ in winners), key=lambda c: c["hF"])


@dataclass
class Choice:
    """What :func:`choose` decided, with the held-out scores it decided on."""

    settings: dict[str, dict]                  # component -> chosen setting
    temperatures: dict[str, float]
    combiner: Combiner
    candidates: list[dict]                     # every candidate with its held-out hF
    setting_scores: dict[str, list[dict]]      # component -> [{setting, hF}]
    heldout: list[dict]                        # the held-out sets (name, products)
    chosen: dict                               # the kept candidate (one of ``candidates``)

    @property
    def heldout_hf(self) -> float:
        return self.chosen["hF"]


def choose(fitter: Fitter, specs: list[ComponentSpec], sets: list[HeldOut], train_nodes: np.ndarray,
           log: Callable[[str], None] | None = None) -> Choice:
    """Steps 2-4 of the module docstring, on the held-out sets ``sets``; ``train_nodes [N]``: the
    labels of the rows the final components are fitted on (the chosen combiner's label prior)."""
    taxonomy, decoder, d = fitter.taxonomy, TreeDecoder(fitter.taxonomy), fitter.settings
    index = {int(n): i for i, n in enumerate(fitter.leaves)}
    targets = [np.asarray([index[int(n)] for n in h.rows.column("node")]) for h in sets]
    nodes = [h.rows.column("node") for h in sets]
    for h in sets:
        audit.read(f"heldout:{h.name}", h.rows.column("product_id"))
    prefetch(fitter, specs, sets)
    settings, setting_scores, raw = {}, {}, {}
    for spec in specs:
        scored = []
        for setting in spec.candidates:
            scores = [fitter.heldout_scores(spec, setting, h) for h in sets]
            hf = float(np.mean([heldout_hf(taxonomy, decoder, log_softmax(s), y, "best_path")
                                for s, y in zip(scores, nodes)]))
            scored.append({"setting": setting, "hF": hf, "scores": scores})
        best = max(scored, key=lambda r: r["hF"])
        settings[spec.name], raw[spec.name] = best["setting"], best["scores"]
        setting_scores[spec.name] = [{"setting": r["setting"], "hF": r["hF"]} for r in scored]
        if log and len(scored) > 1:
            others = ", ".join(f"{r['hF']:.4f}" for r in scored)
            log(f"  {spec.name}: chose {best['setting']} (held-out hF {best['hF']:.4f} of {others})")
    temperatures = {n: fit_temperature(raw[n], targets) for n in raw}
    log_probs = [{n: log_softmax(raw[n][j], temperatures[n]) for n in raw} for j in range(len(sets))]
    names = list(raw)
    features = {s.name: s.feature for s in specs if s.name in raw}
    weightings = {"equal": equal_weights(features, d.equal_weights)}
    if d.combiner == "weights" and len(names) > 1:
        weightings["fitted"] = fit_weights(log_probs, targets, names)
        weightings.update({f"{n} alone": {m: float(m == n) for m in names} for n in names})
    groups = np.concatenate([np.asarray(h.rows.column("group_id")).astype(str) for h in sets])
    crossfit = (crossfit_weights(log_probs, targets, names)
                if "fitted" in weightings and d.crossfit and len(sets) >= 2 else None)
    carriers = prior_carriers(specs, temperatures)
    set_priors = [label_log_prior(fitter.leaves, h.fit.column("node")) for h in sets]
    candidates, counts = [], []
    for label, weights in weightings.items():
        # what each held-out set is scored with: the candidate's weights, or (fitted, cross-fitted)
        # the weights fitted on the other sets
        crossfitted = label == "fitted" and crossfit is not None
        per_set_weights = crossfit if crossfitted else [weights] * len(sets)
        for prior in distinct_priors(weights, d.priors, carriers):
            share = (fit_prior_share(per_set_weights, log_probs, targets, set_priors, carriers)
                     if prior == "fitted" else None)
            combined = [adapted(Combiner(w, d.decodings[0], prior, pi, carriers, prior_share=share), lp).combine(lp)
                        for w, pi, lp in zip(per_set_weights, set_priors, log_probs)]
            for decoding in d.decodings:
                per_set = [hierarchical_counts(taxonomy, y, decoder.decode(c, decoding))
                           for c, y in zip(combined, nodes)]
                hfs = [prf_from_counts(*c.sum(axis=0))["hF"] for c in per_set]
                candidate = {"candidate": label, "decoding": decoding, "prior": prior, "weights": weights,
                             "hF": float(np.mean(hfs)),
                             "per_set": {h.name: float(v) for h, v in zip(sets, hfs)},
                             "out_of_sample": label != "fitted" or crossfitted}
                if share is not None:
                    candidate["prior_share"] = share
                if crossfitted:
                    candidate["crossfit_weights"] = {h.name: w for h, w in zip(sets, per_set_weights)}
                candidates.append(candidate)
                counts.append(np.concatenate(per_set))
    best = pick(candidates, counts, groups, d.choice, fitter.config.optim.seed,
                out_of_sample_only=d.crossfit, prior_base=d.prior_base, agreement=d.agreement)
    combiner = Combiner(dict(best["weights"]), best["decoding"], best["prior"],
                        label_log_prior(fitter.leaves, train_nodes), carriers,
                        prior_share=best.get("prior_share"))
    return Choice(settings, temperatures, combiner,
                  candidates, setting_scores,
                  [{"name": h.name, "fit_products": len(h.fit), "products": len(h.rows)} for h in sets],
                  best)


# ---------------------------------------------------------------------------------- training
def train_decision(config: TrainConfig, table: FeatureTable, progress: Callable[[str], None] | None = None,
                   save: bool = True):
    """Fit a decision-level fusion model on ``table`` (the rows of ``data.platforms``, every
    split) and write its checkpoint to ``<output>/model`` (with ``save``).

    Returns:
        :class:`prodcat.train.trainer.TrainResult`, with ``model`` the in-memory
        :class:`~prodcat.models.decision.DecisionModel`.

    Raises:
        ValueError: fewer than 2 labels among the training rows, or no held-out products.
    """
    from prodcat.train.calibration import calibrate

    start = time.perf_counter()
    say = progress or (lambda _m: None)
    d, data = config.model.decision, config.data
    train = select_train_rows(table, config)
    if len(np.unique(train.column("node"))) < 2:
        raise ValueError(f"{len(train)} training rows hold fewer than 2 categories: nothing to learn")
    fitter = Fitter(config, table.taxonomy, _label_embeddings(config, table))
    specs = component_specs(config)
    sets = heldout_sets(table, train, d, data.val_split, config.optim.seed, list(table.features))
    learnt = {f: int(table.seen_by([f]).sum()) for f in table.trained_on if f in table.features}
    left_out = "".join(
        f"; {'left out of the in-platform set' if f in table.variants else 'never held out'}: the "
        f"{n:,} products the {f} encoder was fine-tuned on" for f, n in learnt.items() if n)
    left_out += "".join(f"; the cross-platform sets of {', '.join(sorted(v))} read {f} from an "
                        "encoder fine-tuned without their platform" for f, v in table.variants.items()
                        if f in table.features)
    say(f"{run_prefix(config)} decision-level fusion of {', '.join(s.name for s in specs)} on "
        f"{len(train):,} training rows; choosing on {', '.join(f'{h.name} ({len(h.rows):,})' for h in sets)}"
        f"{left_out}")
    choice = choose(fitter, specs, sets, train.column("node"), say)
    chosen = choice.chosen
    share = f" (share {chosen['prior_share']:.3f})" if "prior_share" in chosen else ""
    say(f"{run_prefix(config)} chose {chosen['candidate']} / {chosen['decoding']} / prior "
        f"{chosen['prior']}{share} (held-out hF "
        f"{chosen['hF']:.4f}); weights {', '.join(f'{k} {v:.2f}' for k, v in choice.combiner.weights.items())}")
    components, lexical = [], None
    for spec in specs:
        if choice.combiner.weights.get(spec.name, 0) <= 0:
            continue                               # a component nobody listens to is not kept
        comp, scorer = fitter.fit(spec, choice.settings[spec.name], train, "final")
        comp.temperature = choice.temperatures[spec.name]
        components.append(comp)
        lexical = scorer or lexical
    input_dims = {c.feature: (lexical.dim if c.feature == LEXICAL else table.dims[c.feature])
                  for c in components}
    gate = fit_gate(d, train, sets, input_dims)
    if gate is not None:
        say(f"{run_prefix(config)} self-training gate on {gate.feature}: cosine to the nearest of "
            f"{len(gate.centroids)} leaf centroids >= {gate.threshold:.3f} (the {gate.quantile:.0%} "
            f"quantile over {gate.reference:,} in-platform held-out products)")
    model = DecisionModel(
        components=components, combiner=choice.combiner, taxonomy=table.taxonomy, gate=gate,
        model_config=config.model, input_dims=input_dims,
        encoders={f: table.manifest.get("features", {}).get(f, {}) for f in input_dims if f != LEXICAL},
        train_config=config.model_dump(mode="json"), lexical=lexical,
        selection={"platforms": sorted(np.unique(train.column("platform")).tolist()),
                   "candidates": choice.candidates, "chosen": {k: chosen[k] for k in ("candidate", "decoding", "prior", "prior_share")
                              if k in chosen},
                   "rule": d.choice, "crossfit": d.crossfit, "settings": choice.settings,
                   "setting_scores": choice.setting_scores, "temperatures": choice.temperatures,
                   "heldout": choice.heldout})
    calib = table.rows(splits=[data.calib_split])
    audit.read("calibrate", calib.column("product_id"))
    calibration = calibrate(model, calib) if len(calib) else None
    temperature = calibration.temperature if calibration else 1.0
    model.calibration = {"temperature": temperature, "threshold": config.threshold,
                         **({"ece_before": calibration.ece_before, "ece_after": calibration.ece_after,
                             "products": calibration.products} if calibration else {})}
    metrics = {"epoch": 0, "val_hF": choice.heldout_hf, "heldout_hF": choice.heldout_hf,
               "train_rows": len(train), "components": ",".join(c.name for c in components),
               "choice": f"{chosen['candidate']} / {chosen['decoding']} / prior {chosen['prior']}"}
    model.metrics = metrics
    uri = storage.join(config.output, "model")
    if save:
        model.save(uri)
    seconds = time.perf_counter() - start
    say(f"{run_prefix(config)} fitted in {seconds:.0f} s (T {temperature:.3f})" + (f" → {uri}" if save else ""))
    return TrainResult(checkpoint=uri if save else "", metrics=metrics, history=[metrics],
                       seconds_per_epoch=seconds, peak_memory_mb=0.0, temperature=temperature,
                       wall_seconds=seconds, data={"train_rows": len(train)}, model=model)


def fit_gate(settings: DecisionSettings, train: FeatureTable, sets: list[HeldOut],
             input_dims: dict[str, int]) -> LabelSpaceGate | None:
    """The self-training gate (``model.decision.self_train.gate``): leaf centroids of the training
    rows' ``gate_feature`` embedding, its threshold set on the in-platform held-out set's products
    (already read to choose on); None when the model does not self-train or has no gate.
    ``input_dims``: the fitted model's inputs (``{feature: D}``); adapting reads only those.

    Raises:
        ValueError: the gate's feature is not an input of the model, or there is no in-platform
            held-out set to set the threshold on.
    """
    st = settings.self_train
    if st is None or st.gate == "none":
        return None
    f = st.gate_feature
    if f not in input_dims or f == LEXICAL:
        raise ValueError(f"model.decision.self_train.gate_feature {f!r} is not an embedding this model "
                         f"reads ({', '.join(k for k in input_dims if k != LEXICAL)})")
    reference = next((h.rows for h in sets if h.name == "in_platform"), None)
    if reference is None:
        raise ValueError("the self-training gate sets its threshold on the in-platform held-out "
                         "products: add in_platform to model.decision.heldout")
    x, present, _ = train.with_features([f]).arrays()               # the gate's embedding only
    rx, rpresent, _ = reference.with_features([f]).arrays()
    on, ron = present[f], rpresent[f]
    return LabelSpaceGate.fit(f, x[f][on], train.column("node")[on], rx[f][ron], st.gate_quantile)


def _label_embeddings(config: TrainConfig, table: FeatureTable) -> np.ndarray | None:
    if config.model.label_prior == "none":
        return None
    from prodcat.train.labels import label_embeddings

    return label_embeddings(table.taxonomy, config.model, table.manifest)


def is_decision_checkpoint(uri: str) -> bool:
    """True when ``uri`` holds a decision-level fusion checkpoint."""
    from prodcat.models.decision import FORMAT
    from prodcat.models.files import read_json

    return read_json(uri, CONFIG, {}).get("format") == FORMAT
