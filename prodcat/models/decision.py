"""Decision-level fusion: calibrated component classifiers combined by weights, decoded on the tree.

Each component (:mod:`prodcat.models.components`) gives calibrated log-probabilities over the
taxonomy's C label leaves from one input (the lexical scores, a text / image / joint embedding, a
fine-tuned text embedding, the label names). The model combines them as a weighted product of
experts, ``log p(leaf) = sum_k w_k log p_k(leaf) - log Z`` (weights ``w_k >= 0`` fitted on
products the components were not trained on, :mod:`prodcat.train.decision`; Kittler et al. 1998,
"On combining classifiers"), and decodes a *valid path* over the tree (dynamic masking as
decoding): ``greedy`` goes down the tree choosing, under the chosen parent, the child whose subtree
holds the most probability; ``best_path`` outputs the most probable leaf with its ancestors;
``expected_hf`` outputs the leaf whose path has the highest expected hierarchical F1 under the
combined probabilities, ``argmax_i sum_j p(j) hF(i, j)`` with ``hF(i, j) = 2 |A(i) & A(j)| /
(|A(i)| + |A(j)|)`` over the real ancestor sets A (the Bayes decision for each product's hF, cf. Bi
and Kwok 2015, "Bayes-optimal hierarchical multilabel classification"): when the probability is
spread over a subtree it prefers a leaf that shares most of the path with the likely ones (a
shallower "X itself" leaf where the taxonomy has one). Either way every output is a valid taxonomy
path.

Serving logits (what calibration and the cascade read): per level l, ``log`` of each class's
subtree probability, masked to the children of the class chosen one level up (``-inf``
elsewhere); a level's confidence is ``softmax(logits_l / T)`` at the chosen class, so at T = 1 the
product over the path is the probability of the output node. The global temperature T is fitted
on the calibration split like any checkpoint's (:mod:`prodcat.train.calibration`).

Checkpoint (a folder, local or ``s3://``; ``docs/contracts.md``): ``config.json`` (``format``
:data:`FORMAT`, ``model``, ``train``, ``input_dims``, ``features`` with encoder fingerprints,
``components``: their records, ``combiner``: weights and decoding, ``selection``: what the choice
was made on), ``components.safetensors`` (``<component>.<tensor>``), ``taxonomy.json``,
``metrics.json``, ``calibration.json``, and the lexical model's ``lexical.json`` +
``lexical.safetensors`` when a component reads the ``lexical`` feature. Never pickle.

Letters: B products, C label leaves, L levels, C_l classes at level l, K components.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from prodcat.core import storage
from prodcat.core.metrics import real_paths
from prodcat.core.taxonomy import Taxonomy
from prodcat.models.components import Component, component_from_record
from prodcat.models.config import ModelConfig
from prodcat.models.files import (
    CALIBRATION,
    COMPONENTS,
    CONFIG,
    DEFAULT_CALIBRATION,
    METRICS,
    TAXONOMY,
    read_json,
)
from prodcat.models.files import DECISION_FORMAT as FORMAT
from prodcat.models.gate import LabelSpaceGate
from prodcat.models.lexical import FEATURE as LEXICAL
from prodcat.models.lexical import LexicalScorer

DECODINGS = ("greedy", "best_path", "expected_hf")


class TreeDecoder:
    """Subtree probabilities and valid-path decoding over a taxonomy's leaves (numpy).

    Args:
        taxonomy: the tree; its leaves (node order) are the C outputs of every component.
    """

    def __init__(self, taxonomy: Taxonomy) -> None:
        import scipy.sparse as sp

        self.taxonomy = taxonomy
        self.leaves = np.sort(taxonomy.leaves)                                    # [C]
        self.paths = np.stack([taxonomy.targets(int(n)) for n in self.leaves])     # [C, L]
        self.aggregate = []                                                        # [C, C_l] each
        for level, size in enumerate(taxonomy.level_sizes):
            on = np.flatnonzero(self.paths[:, level] >= 0)
            self.aggregate.append(sp.csr_matrix((np.ones(len(on)), (on, self.paths[on, level])),
                                                shape=(len(self.leaves), size)))
        self._gain: np.ndarray | None = None

    @property
    def gain(self) -> np.ndarray:
        """``[C, C]`` per-product hF in [0, 1] of outputting leaf i when leaf j is true (the
        metric of :func:`prodcat.core.metrics.hierarchical_counts`: real ancestors, a virtual
        "X itself" leaf counting as X); symmetric, 1 on the diagonal."""
        if self._gain is None:
            real = real_paths(self.taxonomy)[self.leaves]                            # [C, L]
            incidence = np.zeros((len(self.leaves), len(self.taxonomy)))
            rows = np.repeat(np.arange(len(real)), real.shape[1])
            on = real.ravel() >= 0
            incidence[rows[on], real.ravel()[on]] = 1.0
            common = incidence @ incidence.T
            size = incidence.sum(axis=1)
            self._gain = 2 * common / np.maximum(size[:, None] + size[None, :], 1)
        return self._gain

    def level_log_mass(self, log_p: np.ndarray) -> list[np.ndarray]:
        """Per level ``[B, C_l]``: log of the probability under each class's subtree."""
        p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore"):
            return [np.log(np.asarray(p @ agg)) for agg in self.aggregate]        # sparse right product

    def decode(self, log_p: np.ndarray, decoding: str = "greedy") -> np.ndarray:
        """Output classes ``[B, L]`` (-1 padded), a valid path each, from normalised leaf
        log-probabilities ``[B, C]``.

        Raises:
            ValueError: for an unknown decoding.
        """
        if decoding == "best_path":
            return self.paths[np.argmax(log_p, axis=1)].copy()
        if decoding == "expected_hf":
            p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            return self.paths[np.argmax(p @ self.gain.T, axis=1)].copy()             # [B, C] expected hF
        if decoding != "greedy":
            raise ValueError(f"unknown decoding {decoding!r}; choose one of {', '.join(DECODINGS)}")
        masses = self.level_log_mass(log_p)
        classes = np.full((len(log_p), self.taxonomy.num_levels), -1, np.int64)
        classes[:, 0] = np.argmax(masses[0], axis=1)
        alive = np.ones(len(log_p), bool)
        for level, mask in enumerate(self.taxonomy.child_masks, start=1):
            allowed = mask[classes[:, level - 1].clip(0)]                         # [B, C_l]
            alive &= allowed.any(axis=1)
            scores = np.where(allowed, masses[level], -np.inf)
            classes[:, level] = np.where(alive, np.argmax(scores, axis=1), -1)
        return classes

    def level_logits(self, log_p: np.ndarray, classes: np.ndarray) -> list[np.ndarray]:
        """Serving logits: per level ``[B, C_l]`` log subtree probability, ``-inf`` outside the
        children of the class chosen one level up (``classes [B, L]``)."""
        masses = self.level_log_mass(log_p)
        out = [masses[0].astype(np.float32)]
        for level, mask in enumerate(self.taxonomy.child_masks, start=1):
            allowed = mask[classes[:, level - 1].clip(0)] & (classes[:, level - 1:level] >= 0)
            out.append(np.where(allowed, masses[level], -np.inf).astype(np.float32))
        return out


#: name (and kind) of the component self-training adds (:meth:`DecisionModel.adapt`)
SELF_TRAINED = "self_trained"


def pseudo_labels(combined: np.ndarray, parts: dict[str, np.ndarray], keep: str = "confidence",
                  threshold: float = 0.8, share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Self-training's pseudo-labels: ``(leaf index [B], kept [B] bool)`` from a combination's
    ``log p [B, C]`` and its components' ``{name: log p [B, C]}``. ``keep: confidence`` keeps the
    products whose top probability is at least ``threshold`` (in [0, 1]); ``agree`` those where
    the ``text`` and ``lexical`` components' own most probable leaves are the combination's (a
    component absent from ``parts`` is not asked); ``balanced``, in each leaf the combination
    chooses, the ``ceil(share * n)`` of its n products with the highest top probability
    (class-balanced self-training, Zou et al., ECCV 2018; ties broken by position).

    Raises:
        ValueError: an unknown ``keep``, or ``share`` outside (0, 1].
    """
    labels = combined.argmax(axis=1)
    if keep == "confidence":
        return labels, np.exp(combined.max(axis=1)) >= threshold
    if keep == "agree":
        kept = np.ones(len(labels), bool)
        for name in ("text", LEXICAL):
            if name in parts:
                kept &= parts[name].argmax(axis=1) == labels
        return labels, kept
    if keep == "balanced":
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        top = combined.max(axis=1)
        order = np.lexsort((np.arange(len(labels)), -top, labels))    # by leaf, surest first
        sorted_labels = labels[order]
        starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
        counts = np.bincount(labels, minlength=combined.shape[1])[sorted_labels]
        rank = np.arange(len(order)) - starts
        kept = np.zeros(len(labels), bool)
        kept[order] = rank < np.ceil(share * counts)
        return labels, kept
    raise ValueError(f"unknown pseudo-label selection {keep!r}; choose confidence, agree or balanced")


#: how the combination counts the training label prior (``DecisionSettings.priors``)
PRIORS = ("none", "once", "uniform", "adapt", "fitted")


def label_log_prior(leaves: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """``log pi(leaf)`` ``[C]`` float32: the label distribution of training labels ``nodes [N]``
    over ``leaves [C]``; a leaf no label names gets 0 (no correction: a component that never saw
    it already scores it far below every seen leaf).

    Raises:
        ValueError: when no label is one of ``leaves``.
    """
    leaves = np.asarray(leaves, np.int64)
    counts = np.zeros(len(leaves))
    nodes = np.asarray(nodes, np.int64)
    pos = np.searchsorted(leaves, nodes).clip(0, len(leaves) - 1)
    hit = leaves[pos] == nodes
    if not hit.any():
        raise ValueError(f"none of {len(nodes)} labels is a leaf of the label space")
    np.add.at(counts, pos[hit], 1.0)
    out = np.zeros(len(leaves), np.float32)
    seen = counts > 0
    out[seen] = np.log(counts[seen] / counts.sum())
    return out


def em_label_prior(log_lik: np.ndarray, iterations: int = 500, tol: float = 1e-7) -> np.ndarray:
    """The label distribution ``log pi`` ``[C]`` of a set of unlabelled products that maximises
    their likelihood, by EM (Saerens, Latinne & Decaestecker, 2002, "Adjusting the outputs of a
    classifier to new a priori probabilities: a simple procedure"; the prior-shift estimate that
    Alexandari et al., 2020, find hard to beat with calibrated classifiers).

    ``log_lik [B, C]`` holds prior-free scores ``log p(x | leaf)`` up to a per-product constant
    (a :class:`Combiner` with the prior removed). E step: ``p(leaf | x) ~ p(x | leaf) pi(leaf)``;
    M step: ``pi = mean_x p(leaf | x)``; from the uniform distribution until no entry moves by
    more than ``tol`` (probability) or after ``iterations`` steps. A leaf no product points to
    ends near probability 0 (``log pi`` very negative, finite). Reads no label.

    Raises:
        ValueError: when ``log_lik`` is not ``[B, C]`` with B >= 1.
    """
    from scipy.special import logsumexp

    log_lik = np.asarray(log_lik, np.float64)
    if log_lik.ndim != 2 or not len(log_lik):
        raise ValueError(f"expected scores [B, C] of at least one product, got shape {list(log_lik.shape)}")
    log_pi = np.full(log_lik.shape[1], -np.log(log_lik.shape[1]))
    for _ in range(iterations):
        post = log_lik + log_pi
        post -= logsumexp(post, axis=1, keepdims=True)
        new = np.maximum(logsumexp(post, axis=0) - np.log(len(log_lik)), -700.0)
        moved = np.abs(np.exp(new) - np.exp(log_pi)).max()
        log_pi = new
        if moved < tol:
            break
    return log_pi


def dawid_skene(votes: np.ndarray, num_classes: int, init: np.ndarray | None = None,
                iterations: int = 200, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Each voter's accuracy on a set of unlabelled products, from how their votes agree:
    ``(accuracy [M] in (0, 1), posterior [B, C])``, by EM on the one-coin Dawid-Skene model
    (Dawid & Skene 1979, "Maximum likelihood estimation of observer error-rates using the EM
    algorithm", with one accuracy per voter: right with probability ``a_m``, otherwise any of the
    other ``C - 1`` classes alike; the votes independent given the true class).

    ``votes [B, M]``: M voters' classes in ``[0, C)`` for B products. E step: ``log p(k | x) =
    log pi_k + sum_m [v_m = k] log(a_m (C - 1) / (1 - a_m)) + const``; M step: ``a_m`` the mean
    posterior of the class voter m chose, ``pi`` the mean posterior. From ``init`` (a ``[B, C]``
    posterior, for example the combination's; None: the share of votes), until no accuracy moves
    by more than ``tol`` or after ``iterations`` steps. With fewer than 3 voters the model is not
    identified. Reads no label.

    Raises:
        ValueError: ``votes`` not ``[B, M]`` with B >= 1 and M >= 3, a vote outside ``[0, C)``,
            C < 2, or ``init`` not ``[B, C]``.
    """
    from scipy.special import logsumexp

    votes = np.asarray(votes, np.int64)
    if votes.ndim != 2 or not len(votes) or votes.shape[1] < 3:
        raise ValueError(f"expected the votes [B, M] of at least 3 voters on at least one product, "
                         f"got shape {list(votes.shape)}")
    if num_classes < 2 or votes.min() < 0 or votes.max() >= num_classes:
        raise ValueError(f"votes must be classes in [0, {num_classes}) with at least 2 classes")
    n, m = votes.shape
    rows = np.arange(n)
    if init is None:
        post = np.zeros((n, num_classes))
        for j in range(m):
            np.add.at(post, (rows, votes[:, j]), 1.0 / m)
    else:
        post = np.asarray(init, np.float64)
        if post.shape != (n, num_classes):
            raise ValueError(f"init: expected [{n}, {num_classes}], got {list(post.shape)}")
    accuracy = np.full(m, np.nan)
    eps = 1e-6
    for _ in range(iterations):
        new = np.clip(post[rows[:, None], votes].mean(axis=0), eps, 1 - eps)      # M step
        log_pi = np.log(np.maximum(post.mean(axis=0), 1e-12))
        moved = np.abs(new - accuracy).max() if np.isfinite(accuracy).all() else np.inf
        accuracy = new
        odds = np.log(accuracy * (num_classes - 1) / (1 - accuracy))
        log_post = np.broadcast_to(log_pi, (n, num_classes)).copy()             # E step
        for j in range(m):
            np.add.at(log_post, (rows, votes[:, j]), odds[j])
        post = np.exp(log_post - logsumexp(log_post, axis=1, keepdims=True))
        if moved < tol:
            break
    return accuracy, post


def vote_weights(weights: dict[str, float], accuracy: dict[str, float], num_classes: int) -> dict[str, float]:
    """Weights scaled by each component's log-odds of being right, ``l_k = max(0, log(a_k (C - 1)
    / (1 - a_k)))`` (the optimal weights of a vote of independent voters: Nitzan & Paroush 1982),
    relative to their ``w``-weighted mean, so the weights' sum is kept: ``w'_k = w_k l_k sum_j w_j
    / sum_j w_j l_j``. A component ``accuracy`` does not name keeps its weight; all log-odds 0:
    the weights unchanged."""
    named = {k: w for k, w in weights.items() if w > 0 and k in accuracy}
    odds = {k: max(0.0, float(np.log(accuracy[k] * (num_classes - 1) / (1 - accuracy[k])))) for k in named}
    mean = sum(w * odds[k] for k, w in named.items()) / sum(named.values()) if named else 0.0
    if mean <= 0:
        return dict(weights)
    return {k: (w * odds[k] / mean if k in named else w) for k, w in weights.items()}


def input_modality(feature: str) -> str:
    """The input a component reads, from its feature's name: ``text`` for the product's text
    (the TF-IDF ``lexical`` scores, ``text`` and any ``*_text`` embedding such as ``ft_text`` or
    ``lt_text``), ``image`` for ``image`` and any ``*_image`` embedding (``hr_image``); any other
    feature (a joint CLIP embedding, for one) is its own modality."""
    if feature in (LEXICAL, "text") or feature.endswith("_text"):
        return "text"
    if feature == "image" or feature.endswith("_image"):
        return "image"
    return feature


def equal_weights(features: dict[str, str], mode: str = "per_component") -> dict[str, float]:
    """The equal-weights candidate over components ``{name: feature it reads}``:
    ``per_component``, every component 1; ``per_modality``, every input modality
    (:func:`input_modality`) 1, split equally among the components that read it (three text
    components and one image component: 1/3, 1/3, 1/3 and 1). The product rule assumes the
    components conditionally independent given the class (Kittler et al., 1998, "On combining
    classifiers"); components that read the same input are not, and per component they count
    that input once each.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode == "per_component":
        return {name: 1.0 for name in features}
    if mode != "per_modality":
        raise ValueError(f"unknown equal weighting {mode!r}; choose per_component or per_modality")
    modality = {name: input_modality(f) for name, f in features.items()}
    sizes = {m: list(modality.values()).count(m) for m in set(modality.values())}
    return {name: 1.0 / sizes[m] for name, m in modality.items()}


def prior_coefficient(weights: dict[str, float], prior: str, carriers: dict[str, float],
                      share: float | None = None) -> float:
    """The multiple of ``log pi`` a :class:`Combiner` subtracts: ``sum_c w_c s_c`` less their
    mean for ``once``, all of it for ``uniform`` and ``adapt``, the fraction ``share`` in [0, 1] of
    it for ``fitted``; 0 for ``none`` or when no weighted component carries the prior
    (``carriers``: ``{name: s_c}``).

    Raises:
        ValueError: ``fitted`` without a ``share`` in [0, 1].
    """
    if prior == "fitted" and (share is None or not 0.0 <= share <= 1.0):
        raise ValueError(f"prior correction 'fitted' needs a share in [0, 1], got {share!r}")
    carried = [w * carriers[k] for k, w in weights.items() if w > 0 and k in carriers]
    if prior == "none" or not carried:
        return 0.0
    if prior == "fitted":
        return float(share * sum(carried))
    return float(sum(carried) - (np.mean(carried) if prior == "once" else 0.0))


@dataclass
class Combiner:
    """Weights of the components' log-probabilities, the label prior's correction and the decoding.

    The components that learnt class frequencies by maximum likelihood (``carriers``: the logistic
    regressions) each carry the training label prior in their log-probabilities, ``s_c log pi``
    with ``s_c = 1 / T_c`` (their raw scores hold ``log pi``; the calibration temperature ``T_c``
    scales it), so a weighted sum counts it once per such component. ``prior`` corrects that: ``none`` leaves the sum as it is; ``once`` subtracts
    ``(sum_c w_c s_c - mean_c w_c s_c) log pi`` so the prior counts once, at one component's
    share (the product of experts under conditional independence: Kittler et al., 1998, "On
    combining classifiers"); ``uniform`` subtracts ``sum_c w_c s_c log pi``: no prior at all (a
    new shop's label distribution is unknown: prior shift, Saerens et al., 2002); ``adapt`` removes
    it as ``uniform`` does and adds the *target platform's* label distribution, estimated by EM
    from that platform's unlabelled products (:func:`em_label_prior`, :meth:`adapt`): until
    :meth:`adapt` has run it combines as ``uniform``; ``fitted`` subtracts the fraction
    ``prior_share`` in [0, 1] of ``sum_c w_c s_c log pi`` (0: ``none``, 1: ``uniform``), a share
    fitted by held-out log-likelihood as the temperatures are
    (:func:`prodcat.train.decision.fit_prior_share`; stop 58; meant to end flips between nearly
    tied discrete corrections, it moved more between vector stores than they do in its validation
    round and is not in the default). Which correction helps is chosen on held-out
    products (:mod:`prodcat.train.decision`; there each held-out set is adapted to itself); which
    components carry the prior: :func:`prodcat.train.decision.prior_carriers`.

    Attributes:
        weights: ``{component name: w >= 0}``; a component with weight 0 is not read.
        decoding: ``greedy``, ``best_path`` or ``expected_hf`` (see the module docstring).
        prior: ``none``, ``once``, ``uniform``, ``adapt`` or ``fitted``.
        log_prior: ``[C]`` the label distribution the components were fitted on
            (:func:`label_log_prior`); needed unless ``prior`` is ``none``.
        carriers: ``{component name: s_c}``, the components that carry the prior and the share
            of ``log pi`` their log-probabilities hold (``1 / T_c``).
        target_log_prior: ``[C]`` the target platform's estimated label distribution (``adapt``
            only; None until :meth:`adapt`).
        adapted_on: how many unlabelled products ``target_log_prior`` was estimated from.
        prior_share: ``fitted`` only: the fraction in [0, 1] of the carried prior subtracted.
    """

    weights: dict[str, float]
    decoding: str = "greedy"
    prior: str = "none"
    log_prior: np.ndarray | None = None
    carriers: dict[str, float] = field(default_factory=dict)
    target_log_prior: np.ndarray | None = None
    adapted_on: int = 0
    prior_share: float | None = None

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior correction {self.prior!r}; choose one of: {', '.join(PRIORS)}")
        if (self.prior == "fitted") != (self.prior_share is not None):
            raise ValueError(f"a prior share goes with prior 'fitted' and only with it (prior {self.prior!r}, "
                             f"share {self.prior_share!r})")
        if self.prior == "fitted" and not 0.0 <= self.prior_share <= 1.0:
            raise ValueError(f"the prior share must be in [0, 1], got {self.prior_share!r}")
        if self.prior != "none" and self.log_prior is None:
            raise ValueError(f"prior correction {self.prior!r} needs the label distribution (log_prior)")
        if self.target_log_prior is not None and self.prior != "adapt":
            raise ValueError(f"a target label distribution needs prior 'adapt', not {self.prior!r}")

    def prior_coefficient(self) -> float:
        """What is subtracted times ``log pi`` (:func:`prior_coefficient`)."""
        return prior_coefficient(self.weights, self.prior, self.carriers, self.prior_share)

    def combine(self, log_probs: dict[str, np.ndarray]) -> np.ndarray:
        """Normalised ``log p(leaf)`` ``[B, C]`` from the components' ``{name: [B, C]}``.

        Raises:
            ValueError: when every weight is 0, a weighted component is missing, or the label
                distribution does not have C entries.
        """
        used = {k: w for k, w in self.weights.items() if w > 0}
        if not used:
            raise ValueError("every combiner weight is 0")
        missing = [k for k in used if k not in log_probs]
        if missing:
            raise ValueError(f"components {missing} have weights but no log-probabilities")
        z = sum(w * log_probs[k] for k, w in used.items())
        coefficient = self.prior_coefficient()
        if coefficient:
            if len(self.log_prior) != z.shape[1]:
                raise ValueError(f"the label distribution has {len(self.log_prior)} entries, the "
                                 f"components {z.shape[1]} leaves")
            z = z - coefficient * np.asarray(self.log_prior, np.float64)
        if self.target_log_prior is not None:
            if len(self.target_log_prior) != z.shape[1]:
                raise ValueError(f"the target label distribution has {len(self.target_log_prior)} "
                                 f"entries, the components {z.shape[1]} leaves")
            z = z + np.asarray(self.target_log_prior, np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def adapt(self, log_probs: dict[str, np.ndarray]) -> Combiner:
        """A copy whose target label distribution is estimated (:func:`em_label_prior`) from the
        components' log-probabilities ``{name: [B, C]}`` of B unlabelled products of the target
        platform; it replaces any earlier estimate.

        Raises:
            ValueError: when ``prior`` is not ``adapt``, or there is no product.
        """
        if self.prior != "adapt":
            raise ValueError(f"only a combiner with prior 'adapt' adapts, this one has {self.prior!r}")
        flat = replace(self, target_log_prior=None, adapted_on=0).combine(log_probs)
        return replace(self, target_log_prior=em_label_prior(flat).astype(np.float32),
                       adapted_on=int(len(flat)))

    def record(self) -> dict:
        """What the checkpoint's JSON keeps (``log_prior`` and ``target_log_prior`` go with the
        weights' tensors)."""
        record = {"weights": self.weights, "decoding": self.decoding, "prior": self.prior,
                  "carriers": dict(self.carriers), "adapted_on": self.adapted_on}
        if self.prior_share is not None:
            record["prior_share"] = float(self.prior_share)
        return record


@dataclass
class DecisionModel:
    """A decision-level fusion model, used like :class:`prodcat.models.checkpoint.LoadedModel`
    (``predict``, ``serving_logits``, ``features``, ``encoders``, ``lexical``, ...), so the
    evaluation, calibration, the cascade, the service and bulk scoring run it unchanged.

    Attributes:
        components: the component classifiers (all over the same leaves).
        combiner: their weights and the decoding.
        taxonomy: the label space.
        input_dims: ``{feature: D}`` of every feature a component reads (``lexical``: C).
        lexical: the TF-IDF + linear model that computes the ``lexical`` feature from text.
        selection: how the weights and settings were chosen (held-out scores of the candidates).
        gate: which products self-training may learn from (``model.decision.self_train.gate``;
            :class:`prodcat.models.gate.LabelSpaceGate`), or None: every product.
    """

    components: list[Component]
    combiner: Combiner
    taxonomy: Taxonomy
    model_config: ModelConfig
    input_dims: dict[str, int]
    encoders: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=lambda: dict(DEFAULT_CALIBRATION))
    metrics: dict = field(default_factory=dict)
    lexical: LexicalScorer | None = None
    selection: dict = field(default_factory=dict)
    gate: LabelSpaceGate | None = None
    version: str = ""
    device: str = "cpu"
    uri: str = ""
    model: Any = None                # no torch module: kept for LoadedModel's interface

    def __post_init__(self) -> None:
        self.decoder = TreeDecoder(self.taxonomy)

    @property
    def features(self) -> list[str]:
        """The features read, in order (those of components with a weight > 0)."""
        return list(self.input_dims)

    def _check(self, features: dict[str, np.ndarray]) -> int:
        missing = [f for f in self.features if f not in features]
        if missing:
            raise KeyError(f"features {missing} missing; this model needs {self.features}")
        n = len(next(iter(features.values()))) if features else 0
        for f in self.features:
            shape = np.shape(features[f])
            if shape != (n, self.input_dims[f]):
                raise ValueError(f"feature {f!r}: expected shape [{n}, {self.input_dims[f]}], got {list(shape)}")
        return n

    def component_log_probs(self, features: dict[str, np.ndarray],
                            present: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """``{component: [B, C]}`` calibrated log-probabilities of the weighted components."""
        present = present or {}
        return {c.name: c.log_probs(*c.inputs(features, present))
                for c in self.components if self.combiner.weights.get(c.name, 0) > 0}

    def leaf_log_probs(self, features: dict[str, np.ndarray],
                       present: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Combined, normalised ``log p(leaf)`` ``[B, C]``.

        Raises:
            KeyError: a needed feature is missing; ValueError: a wrong shape.
        """
        self._check(features)
        return self.combiner.combine(self.component_log_probs(features, present))

    @property
    def adapts(self) -> bool:
        """Whether :meth:`adapt` changes this model: its combination chose ``prior: adapt``, it
        reweights its components (``model.decision.reweight``), or it self-trains
        (``model.decision.self_train``, with an embedding to self-train on)."""
        return (self.combiner.prior == "adapt" or self.model_config.decision.reweight != "none"
                or bool(self.self_training_features))

    @property
    def trained_platforms(self) -> list[str] | None:
        """The platforms of the training rows (recorded since stop 41; before, ``data.platforms``
        of the training config), or None where the checkpoint does not say."""
        recorded = self.selection.get("platforms")
        if recorded is not None:
            return list(recorded)
        named = (self.train_config.get("data") or {}).get("platforms")
        return list(named) if named is not None else None

    def new_platform_mask(self, platforms: np.ndarray | list | None, n: int) -> np.ndarray:
        """``[B]`` bool: which of B products come from a platform this model was not trained on
        (:attr:`trained_platforms`). Unknown either way (``platforms`` None, or a checkpoint that
        does not record its platforms): every product counts as new.

        Raises:
            ValueError: ``platforms`` does not hold B values.
        """
        if platforms is None:
            return np.ones(n, bool)
        platforms = np.asarray(platforms, dtype=object)
        if len(platforms) != n:
            raise ValueError(f"platforms: expected {n} values, one per product, got {len(platforms)}")
        if self.trained_platforms is None:
            return np.ones(n, bool)
        return ~np.isin(platforms, np.asarray(self.trained_platforms, dtype=object))

    def adapt(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray] | None = None,
              platforms: np.ndarray | list | None = None) -> DecisionModel:
        """A copy adapted to the B unlabelled products ``features`` (``{feature: [B, D_f]}``, the
        target platform's catalogue; ``platforms`` ``[B]`` their platform names, None: unknown),
        reading their inputs only:

        - ``prior: adapt``: their label distribution, estimated by EM (:meth:`Combiner.adapt`);
        - ``model.decision.reweight: dawid_skene``: the weights of the components, scaled by each
          one's accuracy on the products of platforms it was not trained on, estimated from
          their agreement (:func:`dawid_skene`, :func:`vote_weights`; first, so what follows
          reads the reweighted combination; nothing changes with no such product or fewer than 3
          weighted components). ``selection["reweight"]`` records the estimate and the weights
          as trained;
        - ``model.decision.self_train``: a ``self_trained`` component
          (:class:`prodcat.models.components.SelfTrainedComponent`) fitted on the products the
          combination is sure of (``keep``), labelled with its own choice, and added with
          ``weight`` (self-training; stop 40's validation-only round, docs/evaluation.md). With
          ``scope: new_platforms`` (the default, stop 41) only products of platforms the model was
          not trained on (:meth:`new_platform_mask`) are self-trained on, and with none of them
          nothing is added: in-platform there is no new platform to adapt to. With ``gate:
          centroid`` only the products :attr:`gate` judges inside the label space are
          pseudo-labelled (the component's ``settings["outside_label_space"]`` counts the others).
          With fewer than 2 leaves among the kept products nothing is added (a warning says so). The component
          then scores every product the copy predicts: an adapted checkpoint is meant for the
          platform it was adapted to.

        The copy predicts every product with what it learnt here, whatever batch it comes in;
        ``save`` keeps it (``combiner.target_log_prior``, the ``self_trained`` component). A
        second ``adapt`` replaces the first.

        Raises:
            ValueError: the model neither chose ``prior: adapt`` nor self-trains; no product; a
                wrong shape; ``platforms`` not of length B; a self-training feature that is not an
                input of the model; a gate set but none trained.
            KeyError: a needed feature is missing.
        """
        if not self.adapts:
            raise ValueError(f"this model's combination uses prior {self.combiner.prior!r} and does not "
                             "self-train; only a model trained with prior 'adapt' chosen or with "
                             "model.decision.self_train set adapts to a platform")
        n = self._check(features)
        if not n:
            raise ValueError("no product to adapt to")
        model = self.as_trained()
        settings = self.model_config.decision.self_train
        fresh = self.new_platform_mask(platforms, n)                # checks the length whatever the scope
        new = fresh if settings is not None and settings.scope != "always" else np.ones(n, bool)
        reweight = self.model_config.decision.reweight != "none" and fresh.any()
        if model.combiner.prior != "adapt" and not reweight and (settings is None or not new.any()):
            return replace(model, version="", uri="")           # nothing to learn from here
        parts = model.component_log_probs(features, present)          # read once, used by all
        if reweight:
            model = model._reweight({k: v[fresh] for k, v in parts.items()})
        if model.combiner.prior == "adapt":
            model = replace(model, combiner=model.combiner.adapt(parts))
        if settings is not None and new.any():
            model = model._self_train(features, present or {}, settings, parts, new)
        return replace(model, version="", uri="")

    @property
    def self_training_features(self) -> list[str]:
        """The embeddings self-training reads side by side: ``self_train.features``, or where it is
        null, one text and one image embedding of those this model reads: ``text`` (``image``)
        where it reads it, else the first it reads whose name ends in ``_text`` (``_image``), a
        prefixed store feature such as ``hr_image`` or ``ft_text`` (until stop 47 only the names
        ``text`` and ``image`` counted, so a model reading ``hr_image`` self-trained on its text
        alone); where it reads neither, every embedding it reads. ``[]`` when it does not
        self-train or reads no embedding."""
        settings = self.model_config.decision.self_train
        if settings is None:
            return []
        if settings.features is not None:
            return list(settings.features)
        embeddings = [f for f in self.input_dims if f != LEXICAL]
        chosen = []
        for base in ("text", "image"):
            named = [f for f in embeddings if f == base] or [f for f in embeddings if f.endswith(f"_{base}")]
            chosen += named[:1]
        return chosen or embeddings

    @property
    def self_trained(self) -> Component | None:
        """The ``self_trained`` component :meth:`adapt` added, or None."""
        return next((c for c in self.components if c.kind == SELF_TRAINED), None)

    def as_trained(self) -> DecisionModel:
        """This model as trained, before :meth:`adapt`: without a ``self_trained`` component and
        with the weights it had before any reweighting."""
        model = self.without_self_training()
        before = (self.selection.get("reweight") or {}).get("weights_before")
        if before is None:
            return model
        selection = {k: v for k, v in model.selection.items() if k != "reweight"}
        return replace(model, combiner=replace(model.combiner, weights=dict(before)), selection=selection)

    def _reweight(self, parts: dict[str, np.ndarray]) -> DecisionModel:
        """A copy whose weights are scaled by the components' estimated accuracy on the products
        whose ``{name: log p [B, C]}`` are ``parts`` (``model.decision.reweight``)."""
        import warnings

        used = [k for k, w in self.combiner.weights.items() if w > 0 and k in parts]
        if len(used) < 3:
            warnings.warn(f"reweighting needs at least 3 weighted components to estimate their accuracy "
                          f"from their agreement; this model has {len(used)}: weights unchanged", stacklevel=3)
            return self
        votes = np.stack([parts[k].argmax(axis=1) for k in used], axis=1)
        num_classes = len(self.decoder.leaves)
        accuracy, _ = dawid_skene(votes, num_classes, init=np.exp(self.combiner.combine(parts)))
        estimate = {k: float(a) for k, a in zip(used, accuracy)}
        weights = vote_weights(self.combiner.weights, estimate, num_classes)
        record = {"method": self.model_config.decision.reweight, "accuracy": estimate,
                  "weights_before": dict(self.combiner.weights), "adapted_on": int(len(votes))}
        return replace(self, combiner=replace(self.combiner, weights=weights),
                       selection={**self.selection, "reweight": record})

    def without_self_training(self) -> DecisionModel:
        """This model without a ``self_trained`` component (:meth:`as_trained` also undoes a reweighting)."""
        kept = [c for c in self.components if c.kind != SELF_TRAINED]
        if len(kept) == len(self.components):
            return self
        dropped = {c.name for c in self.components if c.kind == SELF_TRAINED}
        weights = {k: w for k, w in self.combiner.weights.items() if k not in dropped}
        return replace(self, components=kept, combiner=replace(self.combiner, weights=weights))

    def _self_train(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray],
                    settings, parts: dict[str, np.ndarray], eligible: np.ndarray) -> DecisionModel:
        import warnings

        from prodcat.models.components import SelfTrainedComponent, side_by_side

        names = self.self_training_features
        unknown = [f for f in names if f not in self.input_dims]
        if unknown:
            raise ValueError(f"model.decision.self_train.features {unknown} are not inputs of this "
                             f"model ({', '.join(self.input_dims)})")
        if not names:
            warnings.warn(f"self-training needs an embedding and this model reads none "
                          f"({', '.join(self.input_dims)}): no self-trained component added", stacklevel=3)
            return self
        x, _ = side_by_side(features, present, names)
        outside = 0
        if settings.gate != "none":
            if self.gate is None:
                raise ValueError(f"model.decision.self_train.gate is {settings.gate!r} but this model "
                                 "holds no gate; it was trained without one: retrain it")
            f = self.gate.feature
            if f not in features:
                raise KeyError(f"the self-training gate reads feature {f!r}, which is missing")
            inside = self.gate.inside(features[f], present.get(f))
            outside = int((eligible & ~inside).sum())
            eligible = eligible & inside
        seed = int(self.train_config.get("optim", {}).get("seed", 0))
        if settings.views == "cross":
            return self._co_train(features, present, settings, parts, eligible, outside, seed)
        leaves = self.decoder.leaves
        weights = {**self.combiner.weights, SELF_TRAINED: float(settings.weight)}
        combined = self.combiner.combine(parts)
        component, history = None, []
        for round_ in range(settings.rounds):
            labels, kept = pseudo_labels(combined, parts, settings.keep, settings.threshold, settings.share)
            kept &= eligible
            if len(np.unique(labels[kept])) < 2:
                if component is None:
                    warnings.warn(f"self-training kept {int(kept.sum())} of {int(eligible.sum())} products, "
                                  "in fewer than 2 categories: no self-trained component added", stacklevel=3)
                    return self
                break                                          # keep the last round's regression
            component = SelfTrainedComponent.fit(SELF_TRAINED, names, x[kept], leaves[labels[kept]],
                                                 self.taxonomy, C=settings.C, max_iter=settings.max_iter,
                                                 smoothing=settings.smoothing, seed=seed)
            history.append(int(kept.sum()))
            if round_ + 1 < settings.rounds:                   # relabel with this round's regression
                own = component.log_probs(*component.inputs(features, present))
                combined = replace(self.combiner, weights=weights).combine({**parts, SELF_TRAINED: own})
        component.settings.update(_self_training_record(settings, int(eligible.sum() + outside), outside))
        if settings.rounds > 1:
            component.settings["rounds"] = history              # products kept in each round drawn
        return replace(self, components=[*self.components, component],
                       combiner=replace(self.combiner, weights=weights))

    def _co_train(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray], settings,
                  parts: dict[str, np.ndarray], eligible: np.ndarray, outside: int, seed: int) -> DecisionModel:
        """``self_train.views: cross``: co-training (Blum & Mitchell 1998; across domains, Chen,
        Weinberger & Blitzer 2011). The self-training features are grouped by input modality
        (:func:`input_modality`); for each group (view) a regression named ``self_trained_<view>``
        is fitted on the products that the combination of the *other* modalities' components
        (same weights, prior correction as trained) is sure of (``keep``), labelled with that
        combination's choice, and added with ``weight``. A view no other component reads, or whose
        kept products span fewer than 2 leaves, adds nothing (a warning says so). Each added
        component records ``settings["co_trained_on"]``: the products at least one view was
        fitted on."""
        import warnings

        from prodcat.models.components import SelfTrainedComponent, side_by_side

        views: dict[str, list[str]] = {}
        for name in self.self_training_features:
            views.setdefault(input_modality(name), []).append(name)
        modality = {c.name: input_modality(c.feature) for c in self.components}
        weights, added = dict(self.combiner.weights), []
        labelled = np.zeros(len(eligible), bool)                 # by at least one view's teachers
        for view, names in views.items():
            teachers = {k: w for k, w in self.combiner.weights.items()
                        if w > 0 and k in modality and modality[k] != view}
            if not teachers:
                warnings.warn(f"co-training: no weighted component reads anything but the {view} view: "
                              f"no self_trained_{view} component added", stacklevel=4)
                continue
            labels, kept = pseudo_labels(replace(self.combiner, weights=teachers).combine(parts), parts,
                                         settings.keep, settings.threshold, settings.share)
            kept &= eligible
            if len(np.unique(labels[kept])) < 2:
                warnings.warn(f"co-training: the components other than the {view} view are sure of "
                              f"{int(kept.sum())} of {int(eligible.sum())} products, in fewer than 2 "
                              f"categories: no self_trained_{view} component added", stacklevel=4)
                continue
            labelled |= kept
            x, _ = side_by_side(features, present, names)
            component = SelfTrainedComponent.fit(f"{SELF_TRAINED}_{view}", names, x[kept],
                                                 self.decoder.leaves[labels[kept]], self.taxonomy,
                                                 C=settings.C, max_iter=settings.max_iter,
                                                 smoothing=settings.smoothing, seed=seed)
            component.settings.update({**_self_training_record(settings, int(eligible.sum() + outside), outside),
                                       "views": "cross", "taught_by": sorted(teachers)})
            added.append(component)
            weights[component.name] = float(settings.weight)
        if not added:
            return self
        for component in added:
            component.settings["co_trained_on"] = int(labelled.sum())
        return replace(self, components=[*self.components, *added],
                       combiner=replace(self.combiner, weights=weights))

    @property
    def self_trained_components(self) -> list[Component]:
        """Every component :meth:`adapt` added: one ``self_trained``, or with ``views: cross``
        one ``self_trained_<view>`` per view."""
        return [c for c in self.components if c.kind == SELF_TRAINED]

    def serving_logits(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray] | None = None,
                       batch_size: int = 4096) -> tuple[list[np.ndarray], np.ndarray]:
        """``(logits, classes)``: per level ``[B, C_l]`` float32 (log subtree probabilities masked
        to the chosen parent's children) and the ``[B, L]`` output classes (-1 padded)."""
        n = self._check(features)
        chunks, classes = [], []
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            log_p = self.leaf_log_probs({f: v[sl] for f, v in features.items() if f in self.input_dims},
                                        {f: v[sl] for f, v in (present or {}).items()})
            chosen = self.decoder.decode(log_p, self.combiner.decoding)
            chunks.append(self.decoder.level_logits(log_p, chosen))
            classes.append(chosen)
        if not chunks:
            return ([np.zeros((0, c), np.float32) for c in self.taxonomy.level_sizes],
                    np.zeros((0, self.taxonomy.num_levels), np.int64))
        return [np.concatenate(level) for level in zip(*chunks)], np.concatenate(classes)

    def predict(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray] | None = None,
                temperature: float | None = None, batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Categorize B products (the same outputs as ``LoadedModel.predict``).

        Returns:
            ``category_id`` [B] int64, ``category_path`` [B] str, ``node`` [B] int64, ``classes``
            [B, L] int64 (-1 padded; a valid path each), ``level_confidence`` [B, L] float32 in
            [0, 1] (``softmax(logits_l / T)`` at the chosen class; 0 below the output's depth).

        Raises:
            KeyError: a needed feature is missing; ValueError: a wrong shape or T <= 0.
        """
        temperature = float(temperature or self.calibration.get("temperature", 1.0))
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits, classes = self.serving_logits(features, present, batch_size)
        conf = np.zeros(classes.shape, np.float32)
        for level, z in enumerate(logits):
            rows = np.flatnonzero(classes[:, level] >= 0)
            if not len(rows):
                continue
            scaled = z[rows] / temperature
            scaled = scaled - scaled.max(axis=1, keepdims=True)
            p = np.exp(scaled)
            conf[rows, level] = p[np.arange(len(rows)), classes[rows, level]] / p.sum(axis=1)
        nodes = _deepest_nodes(self.taxonomy, classes)
        return {"node": nodes, "classes": classes, "level_confidence": conf,
                "category_id": self.taxonomy.ids[nodes].astype(np.int64),
                "category_path": np.asarray([self.taxonomy.path(int(v)) for v in nodes], object)}

    # ------------------------------------------------------------------ persistence (no pickle)
    def save(self, uri: str) -> str:
        """Write the checkpoint folder at ``uri`` (local or ``s3://``); returns ``uri``.

        Raises:
            ValueError: when a component reads the ``lexical`` feature but the model holds no
                lexical model to compute it from text.
        """
        from safetensors.numpy import save

        if LEXICAL in self.input_dims and self.lexical is None:
            raise ValueError("a component reads the lexical feature but the model has no lexical "
                             "model (TF-IDF + linear) to compute it; fit one or drop the component")
        tensors = {f"{c.name}.{key}": np.ascontiguousarray(value)
                   for c in self.components for key, value in c.tensors.items()}
        tensors["leaves"] = self.decoder.leaves
        if self.combiner.log_prior is not None:
            tensors["combiner.log_prior"] = np.asarray(self.combiner.log_prior, np.float32)
        if self.combiner.target_log_prior is not None:
            tensors["combiner.target_log_prior"] = np.asarray(self.combiner.target_log_prior, np.float32)
        if self.gate is not None:
            tensors["gate.centroids"] = np.ascontiguousarray(self.gate.centroids, np.float32)
        weights = save(tensors)
        features = {f: {"dim": int(d), **self.encoders.get(f, {})} for f, d in self.input_dims.items()}
        cfg = {"format": FORMAT, "train": self.train_config, "model": self.model_config.model_dump(mode="json"),
               "input_dims": dict(self.input_dims), "features": features,
               "taxonomy_version": self.taxonomy.version,
               "components": [c.record() for c in self.components],
               "combiner": self.combiner.record(),
               "selection": self.selection,
               **({"gate": self.gate.record()} if self.gate is not None else {})}
        storage.makedirs(uri)
        storage.write_text(storage.join(uri, CONFIG), _json(cfg))
        storage.write_text(storage.join(uri, TAXONOMY), self.taxonomy.to_json())
        storage.write_bytes(storage.join(uri, COMPONENTS), weights)
        storage.write_text(storage.join(uri, METRICS), _json(self.metrics))
        storage.write_text(storage.join(uri, CALIBRATION), _json(self.calibration))
        if self.lexical is not None:
            self.lexical.save(uri)
        self.version = hashlib.sha256(weights).hexdigest()[:12]
        self.uri = uri
        return uri


def _self_training_record(settings, adapted_on: int, outside: int) -> dict:
    """What a self-trained component records of how it was fitted (``settings``:
    :class:`prodcat.models.config.SelfTrainSettings`; ``adapted_on``: the products adapted to,
    ``outside``: those the gate left out)."""
    record = {"keep": settings.keep, "threshold": settings.threshold, "adapted_on": adapted_on,
              "scope": settings.scope}
    if settings.gate != "none":
        record.update({"gate": settings.gate, "outside_label_space": outside})
    if settings.keep == "balanced":
        record["share"] = settings.share
    return record


def load_decision(uri: str, cfg: dict | None = None, device: str = "cpu") -> DecisionModel:
    """Load a decision-level fusion checkpoint folder.

    Raises:
        FileNotFoundError: a required file is missing (names it).
        prodcat.core.errors.UnreadableFile: a damaged JSON or weights file.
        ValueError: when ``config.json`` is not a :data:`FORMAT` checkpoint.
    """
    from safetensors.numpy import load

    from prodcat.core.errors import UnreadableFile

    cfg = cfg or read_json(uri, CONFIG)
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{uri}: not a {FORMAT} checkpoint (format={cfg.get('format')!r})")
    taxonomy = Taxonomy.from_json(storage.read_text(storage.join(uri, TAXONOMY)))
    weights = storage.read_bytes(storage.join(uri, COMPONENTS))
    try:
        tensors = load(weights)
    except Exception as err:  # safetensors raises its own SafetensorError for a damaged file
        raise UnreadableFile(storage.join(uri, COMPONENTS), f"{type(err).__name__}: {err}") from None
    leaves = tensors.pop("leaves")
    log_prior = tensors.pop("combiner.log_prior", None)      # absent before stop 37: prior none
    target = tensors.pop("combiner.target_log_prior", None)  # only once adapted (prior adapt)
    centroids = tensors.pop("gate.centroids", None)            # only with a self-training gate (stop 45)
    if ("gate" in cfg) != (centroids is not None):
        raise UnreadableFile(storage.join(uri, COMPONENTS), "config.json and the weights disagree on "
                             "the self-training gate (one has it, the other not)")
    components = []
    for record in cfg["components"]:
        prefix = record["name"] + "."
        mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        components.append(component_from_record(record, leaves, mine))
    lexical = None
    if LEXICAL in cfg["input_dims"]:
        if not LexicalScorer.exists(uri):
            raise FileNotFoundError(f"{uri}: the model reads the lexical feature but the folder has "
                                    "no lexical.json; copy the whole checkpoint folder")
        lexical = LexicalScorer.load(uri)
    encoders = {f: {k: v for k, v in info.items() if k != "dim"} for f, info in cfg["features"].items()
                if f != LEXICAL}
    return DecisionModel(
        components=components, combiner=Combiner(**cfg["combiner"], log_prior=log_prior, target_log_prior=target),
        taxonomy=taxonomy,
        model_config=ModelConfig.model_validate(cfg["model"]), input_dims=cfg["input_dims"],
        encoders=encoders, train_config=cfg.get("train", {}),
        calibration=read_json(uri, CALIBRATION, DEFAULT_CALIBRATION), metrics=read_json(uri, METRICS, {}),
        lexical=lexical, selection=cfg.get("selection", {}),
        gate=LabelSpaceGate.from_record(cfg["gate"], centroids) if centroids is not None else None,
        version=hashlib.sha256(weights).hexdigest()[:12], device=device, uri=uri)


def _deepest_nodes(taxonomy: Taxonomy, classes: np.ndarray) -> np.ndarray:
    nodes = np.zeros(len(classes), np.int64)
    for level, level_nodes in enumerate(taxonomy.level_nodes):
        cls = classes[:, level]
        nodes = np.where(cls >= 0, level_nodes[cls.clip(0, len(level_nodes) - 1)], nodes)
    return nodes


def _json(data: Any) -> str:
    def builtin(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return json.dumps(data, indent=2, sort_keys=True, default=builtin)
