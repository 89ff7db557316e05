"""The components of decision-level fusion: calibrated classifiers over a taxonomy's label leaves.

Each component reads one input and gives log-probabilities over the C label leaves (the
taxonomy's leaves, virtual "X itself" leaves included, in node order), so components trained on
different inputs can be combined at the decision level (:mod:`prodcat.models.decision`):

- ``linear`` on an embedding feature (``text``, ``image``, ``joint``, a fine-tuned ``text_ft``):
  multinomial logistic regression (scikit-learn ``LogisticRegression``), either *flat* (one
  softmax over the leaves) or *per level* (one softmax per level, masked to the children of each
  parent: the per-level heads with dynamic masking of Gross et al., as a linear model; a leaf's
  log-probability is the sum of its path's masked log-probabilities).
- ``scores`` on a feature that already holds one score per leaf: the ``lexical`` feature, the
  decision scores of the TF-IDF + linear model (:mod:`prodcat.models.lexical`).
- ``label``: zero-shot, the cosine between the product's text embedding and each leaf's embedded
  category path (the label-name prior, :mod:`prodcat.models.prior`, as a classifier of its own).
- ``self_trained``: a logistic regression fitted on a *target platform's* own products, with the
  model's predictions there as pseudo-labels, reading several embeddings side by side
  (:meth:`prodcat.models.decision.DecisionModel.adapt`; self-training).

Every component is calibrated by a softmax temperature ``T`` fitted on products it was not trained
on (Guo et al., 2017): ``log_softmax(scores / T)``. A product whose input is absent (no image) gets
the uniform distribution from that component, which then adds nothing to a combination.

Weights live in safetensors (``<name>.coef`` ...), settings in JSON: never pickle.

Letters: B products, D feature dimension, C label leaves, L levels, C_l classes at level l.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from prodcat.core.registry import Registry
from prodcat.core.taxonomy import Taxonomy

#: score a component gives a leaf it never saw in training (far below any real score)
UNSEEN_SCORE = -1e4

#: component kinds: ``cls.fit(...)`` / ``cls.from_tensors(...)``; a contract test runs every one
component_kinds: Registry = Registry("component kind")


def log_softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``log_softmax(scores / T)``: float64 ``[B, C]``."""
    z = np.asarray(scores, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@dataclass
class Component:
    """One calibrated classifier over ``leaves`` reading feature ``feature``.

    Attributes:
        name: its name in the model (``text``, ``lexical``, ``label`` ...), unique per model.
        feature: the input feature (``[B, D]``).
        leaves: ``[C]`` taxonomy nodes, the output order (the taxonomy's leaves).
        temperature: T > 0 of its calibration.
        settings: JSON-able hyper-parameters (recorded in the checkpoint).
        tensors: its weights (numpy arrays, saved as ``<name>.<key>``).
    """

    name: str
    feature: str
    leaves: np.ndarray
    temperature: float = 1.0
    settings: dict = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "abstract"

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Uncalibrated scores ``[B, C]`` (float64) of inputs ``x [B, D]``."""
        raise NotImplementedError

    def inputs(self, features: dict[str, np.ndarray],
               present: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(x [B, D], present [B] or None)``: what :meth:`log_probs` reads of a model's
        ``{feature: [B, D_f]}`` and ``{feature: [B]}`` (here: its one feature)."""
        return features[self.feature], present.get(self.feature)

    def log_probs(self, x: np.ndarray, present: np.ndarray | None = None,
                  temperature: float | None = None) -> np.ndarray:
        """Calibrated log-probabilities ``[B, C]`` (rows sum to 1 after ``exp``); absent rows
        (``present`` False) uniform."""
        out = log_softmax(self.scores(x), self.temperature if temperature is None else temperature)
        if present is not None and not np.all(present):
            out[~np.asarray(present, bool)] = -np.log(len(self.leaves))
        return out

    def record(self) -> dict:
        """What the checkpoint's JSON keeps of it."""
        return {"name": self.name, "kind": self.kind, "feature": self.feature,
                "temperature": float(self.temperature), "settings": self.settings}


def _rows_of(leaves: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.searchsorted(leaves, np.asarray(classes, np.int64))


@component_kinds.register("linear")
@dataclass
class LinearComponent(Component):
    """Multinomial logistic regression on an embedding, flat over the leaves or per level.

    Fitted with scikit-learn's ``LogisticRegression`` (lbfgs, L2 with inverse strength ``C``),
    on L2-normalised inputs. ``tensors``: flat: ``coef [C, D]``, ``intercept [C]``; per level:
    ``coef<l> [C_l, D]``, ``intercept<l> [C_l]``, the leaves' classes ``paths [C, L]`` and the
    child masks ``mask<l> [C_{l-1}, C_l]`` (per-level scores are log-probabilities already).
    """

    kind: str = "linear"

    @classmethod
    def fit(cls, name: str, feature: str, x: np.ndarray, nodes: np.ndarray, taxonomy: Taxonomy,
            C: float = 1.0, structure: str = "flat", max_iter: int = 300,
            seed: int = 0) -> "LinearComponent":
        """Fit on ``x [B, D]`` and label nodes ``nodes [B]`` (leaves of ``taxonomy``).

        Raises:
            ValueError: with fewer than 2 distinct labels, mismatched lengths, or an unknown
                ``structure`` (``flat`` | ``per_level``).
        """
        x, nodes = _normalise(x), np.asarray(nodes, np.int64)
        if len(x) != len(nodes):
            raise ValueError(f"{len(x)} inputs but {len(nodes)} labels")
        if len(np.unique(nodes)) < 2:
            raise ValueError(f"component {name!r} needs at least 2 distinct labels to fit")
        leaves = np.sort(taxonomy.leaves)
        settings = {"C": float(C), "structure": structure, "max_iter": int(max_iter), "seed": int(seed)}
        if structure == "flat":
            coef, intercept = _logreg(x, nodes, leaves, C, max_iter, seed)
            tensors = {"coef": coef, "intercept": intercept}
        elif structure == "per_level":
            targets = np.stack([taxonomy.targets(int(n)) for n in nodes])        # [B, L]
            tensors = {"paths": np.stack([taxonomy.targets(int(n)) for n in leaves])}  # [C, L]
            for level, size in enumerate(taxonomy.level_sizes):
                rows = targets[:, level] >= 0
                classes = np.arange(size)
                if len(np.unique(targets[rows, level])) < 2:   # one class at this level: certain
                    coef = np.zeros((size, x.shape[1]), np.float32)
                    intercept = np.full(size, UNSEEN_SCORE, np.float32)
                    intercept[np.unique(targets[rows, level])] = 0.0
                else:
                    coef, intercept = _logreg(x[rows], targets[rows, level], classes, C, max_iter, seed)
                tensors[f"coef{level}"], tensors[f"intercept{level}"] = coef, intercept
            tensors.update(_level_masks(taxonomy))
        else:
            raise ValueError(f"unknown structure {structure!r}; choose flat or per_level")
        return cls(name=name, feature=feature, leaves=leaves, settings=settings, tensors=tensors)

    def scores(self, x: np.ndarray) -> np.ndarray:
        x = _normalise(x)
        if self.settings.get("structure", "flat") == "flat":
            return x @ self.tensors["coef"].T.astype(np.float64) + self.tensors["intercept"]
        # per level: log p(leaf) = sum over its path of log softmax over the parent's children
        paths = self.tensors["paths"]                                   # [C, L]
        out = np.zeros((len(x), len(self.leaves)))
        parents = np.zeros(len(self.leaves), np.int64)                  # class one level up
        for level in range(paths.shape[1]):
            logits = x @ self.tensors[f"coef{level}"].T.astype(np.float64) + self.tensors[f"intercept{level}"]
            on = paths[:, level] >= 0                                   # leaves this deep
            if level == 0:
                out[:, on] += log_softmax(logits)[:, paths[on, 0]]
            else:
                allowed = self.tensors[f"mask{level}"].astype(bool)          # [C_{l-1}, C_l]
                for parent in np.unique(parents[on]):
                    children = np.flatnonzero(allowed[parent])
                    mine = on & (parents == parent)
                    sub = log_softmax(logits[:, children])                # [B, |children|]
                    where = np.searchsorted(children, paths[mine, level])
                    out[:, mine] += sub[:, where]
            parents = np.where(on, paths[:, level], parents)
        return out



def _level_masks(taxonomy: Taxonomy) -> dict[str, np.ndarray]:
    """``{"mask<l>": uint8 [C_{l-1}, C_l]}``: which classes at level l are children of each class
    at level l-1 (the taxonomy's child masks; safetensors has no bool)."""
    return {f"mask{level}": np.asarray(mask, np.uint8)
            for level, mask in enumerate(taxonomy.child_masks, start=1)}


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _logreg(x: np.ndarray, y: np.ndarray, classes: np.ndarray, C: float, max_iter: int,
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(coef [K, D] float32, intercept [K] float32)`` over ``classes [K]``; classes absent from
    ``y`` get :data:`UNSEEN_SCORE` as intercept."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(x, y)
    coef = np.zeros((len(classes), x.shape[1]), np.float32)
    intercept = np.full(len(classes), UNSEEN_SCORE, np.float32)
    rows = _rows_of(classes, model.classes_)
    if len(model.classes_) == 2:                       # binary: scikit-learn keeps one row
        coef[rows] = np.vstack([-model.coef_, model.coef_]) / 2
        intercept[rows] = np.concatenate([-model.intercept_, model.intercept_]) / 2
    else:
        coef[rows], intercept[rows] = model.coef_, model.intercept_
    return coef, intercept


@component_kinds.register("scores")
@dataclass
class ScoresComponent(Component):
    """A feature that already holds one score per leaf (``lexical``: the TF-IDF + linear
    model's decision scores, :mod:`prodcat.models.lexical`), calibrated by its temperature."""

    kind: str = "scores"

    @classmethod
    def fit(cls, name: str, feature: str, taxonomy: Taxonomy, **settings) -> "ScoresComponent":
        return cls(name=name, feature=feature, leaves=np.sort(taxonomy.leaves), settings=dict(settings))

    def scores(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.shape[1] != len(self.leaves):
            raise ValueError(f"component {self.name!r}: expected {len(self.leaves)} scores per "
                             f"product, got {x.shape[1]}")
        return x


@component_kinds.register("label")
@dataclass
class LabelComponent(Component):
    """Zero-shot: ``cos(text embedding, embedded category path)`` per leaf (the label-name
    prior as a classifier). ``tensors["labels"]``: ``[C, D]`` the leaves' path embeddings, made
    by the encoder of the text feature (:mod:`prodcat.train.labels`)."""

    kind: str = "label"

    @classmethod
    def fit(cls, name: str, feature: str, taxonomy: Taxonomy, label_embeddings: np.ndarray,
            **settings) -> "LabelComponent":
        """``label_embeddings``: ``[N, D]`` per taxonomy node (rows of the leaves are kept)."""
        leaves = np.sort(taxonomy.leaves)
        labels = _normalise(np.asarray(label_embeddings)[leaves]).astype(np.float32)
        return cls(name=name, feature=feature, leaves=leaves, settings=dict(settings),
                   tensors={"labels": labels})

    def scores(self, x: np.ndarray) -> np.ndarray:
        return _normalise(x) @ self.tensors["labels"].T.astype(np.float64)


def side_by_side(features: dict[str, np.ndarray], present: dict[str, np.ndarray],
                 names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(x [B, D_1 + D_2 ...], present [B])``: the features ``names`` side by side, each
    L2-normalised, an absent one (``present`` False) zeros; present where any of them is."""
    blocks, any_present = [], np.zeros(len(features[names[0]]), bool)
    for f in names:
        here = present.get(f)
        here = np.ones(len(features[f]), bool) if here is None else np.asarray(here, bool)
        blocks.append(np.where(here[:, None], _normalise(features[f]), 0.0))
        any_present |= here
    return np.hstack(blocks), any_present


@component_kinds.register("self_trained")
@dataclass
class SelfTrainedComponent(Component):
    """Self-training on a target platform (pseudo-labelling, Lee 2013; self-training, Yarowsky
    1995): a multinomial logistic regression on the features ``settings["features"]`` side by
    side (each L2-normalised; an absent one is zeros), fitted on the target's own products
    labelled by the model's predictions. Its probabilities are smoothed towards uniform,
    ``(1 - s) p + s / C`` (``settings["smoothing"]``): a leaf no kept product has keeps ``s / C``
    and is not ruled out. Not calibrated (``T = 1``): its weight in the combination is a setting.
    ``tensors``: ``coef [C, D_1 + D_2 ...]``, ``intercept [C]``."""

    kind: str = "self_trained"

    @classmethod
    def fit(cls, name: str, features: list[str], x: np.ndarray, nodes: np.ndarray, taxonomy: Taxonomy,
            C: float = 1.0, max_iter: int = 300, smoothing: float = 0.05,
            seed: int = 0) -> "SelfTrainedComponent":
        """Fit on ``x [B, D_1 + ...]`` (:meth:`inputs` of the target products) and their
        pseudo-label leaves ``nodes [B]``.

        Raises:
            ValueError: with fewer than 2 distinct labels, or mismatched lengths.
        """
        nodes = np.asarray(nodes, np.int64)
        if len(x) != len(nodes):
            raise ValueError(f"{len(x)} inputs but {len(nodes)} labels")
        if len(np.unique(nodes)) < 2:
            raise ValueError(f"component {name!r} needs at least 2 distinct labels to fit")
        leaves = np.sort(taxonomy.leaves)
        coef, intercept = _logreg(np.asarray(x, np.float64), nodes, leaves, C, max_iter, seed)
        settings = {"features": list(features), "C": float(C), "max_iter": int(max_iter),
                    "smoothing": float(smoothing), "seed": int(seed), "fitted_on": int(len(nodes))}
        return cls(name=name, feature=features[0], leaves=leaves, settings=settings,
                   tensors={"coef": coef, "intercept": intercept})

    def inputs(self, features: dict[str, np.ndarray],
               present: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        return side_by_side(features, present, self.settings["features"])

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) @ self.tensors["coef"].T.astype(np.float64) + self.tensors["intercept"]

    def log_probs(self, x: np.ndarray, present: np.ndarray | None = None,
                  temperature: float | None = None) -> np.ndarray:
        s = float(self.settings.get("smoothing", 0.0))
        p = np.exp(log_softmax(self.scores(x), self.temperature if temperature is None else temperature))
        out = np.log((1.0 - s) * p + s / len(self.leaves))
        if present is not None and not np.all(present):
            out[~np.asarray(present, bool)] = -np.log(len(self.leaves))
        return out


def component_from_record(record: dict, leaves: np.ndarray, tensors: dict[str, np.ndarray]) -> Component:
    """Rebuild a component from its :meth:`Component.record` and its tensors.

    Raises:
        KeyError: for an unknown kind (lists the registered ones).
    """
    cls = component_kinds.get(record["kind"])
    return cls(name=record["name"], feature=record["feature"], leaves=np.asarray(leaves, np.int64),
               temperature=float(record.get("temperature", 1.0)), settings=dict(record.get("settings", {})),
               tensors=tensors)
