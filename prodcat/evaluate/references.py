"""The reference rows of every evaluation table: what a reviewer runs first.

Each is a decision-level model (:mod:`prodcat.models.decision`) with one or two components, fitted
by the same code and the same nested protocol as the default (:mod:`prodcat.train.decision`), so
it is tuned as well as the model it is compared with:

- ``tfidf``: TF-IDF (word n-grams, or word and character n-grams) of title + description and a
  linear SVM over the leaves; the n-grams and C are chosen from ``reference_lexical_grid`` on
  held-out products of the training platforms only. The baseline every model is compared with.
- ``logreg-<feature>``: a flat multinomial logistic regression on each frozen embedding the
  evaluated models read (``text``, ``image``, ...).
- ``tfidf+logreg-text``: the sum of the calibrated log-probabilities of those two (equal weights;
  each one's temperature fitted on held-out products).
- ``tfidf-adapt``: ``tfidf`` with ``prior: adapt`` always (not chosen): the test products' label
  distribution estimated by EM from their unlabelled scores
  (:func:`prodcat.models.decision.em_label_prior`), the adaptation a model that chooses ``adapt``
  gets, given to the baseline too.

All of them output the most probable leaf with its ancestors (flat: always a valid path), and none
self-trains on the products it scores (``model.decision.self_train`` null): they are the
classifiers a practitioner fits, not adapted to the test platform.
"""

from __future__ import annotations

from typing import Any

from prodcat.models.lexical import FEATURE as LEXICAL
from prodcat.train.config import TrainConfig, apply_overrides

TFIDF = "tfidf"
SUM = "tfidf+logreg-text"
TFIDF_ADAPT = "tfidf-adapt"


def _common(grid: list[dict]) -> dict[str, Any]:
    return {"model.fusion": "decision", "model.label_prior": "none", "model.lexical_prior": False,
            "model.decision.combiner": "equal", "model.decision.decodings": ["best_path"],
            "model.decision.priors": ["none"], "model.decision.self_train": None,
            "model.decision.lexical_grid": [dict(g) for g in grid]}


def reference_models(train: TrainConfig, models: dict[str, dict], kinds: list[str],
                     grid: list[dict]) -> dict[str, dict[str, Any]]:
    """``{name: TrainConfig overrides}`` of the reference rows ``kinds`` (``tfidf``, ``logreg``,
    ``tfidf+logreg-text``, ``tfidf-adapt``), for the embedding features that ``train`` and ``models`` read."""
    features: list[str] = []
    for overrides in [{}, *models.values()]:
        for f in apply_overrides(train, overrides).model.modalities:
            if f != LEXICAL and f not in features:
                features.append(f)
    common = _common(grid)
    out: dict[str, dict[str, Any]] = {}
    if "tfidf" in kinds:
        out[TFIDF] = {**common, "model.modalities": [LEXICAL]}
    if "logreg" in kinds:
        out.update({f"logreg-{f}": {**common, "model.modalities": [f]} for f in features})
    if "tfidf+logreg-text" in kinds and "text" in features:
        out[SUM] = {**common, "model.modalities": [LEXICAL, "text"]}
    if TFIDF_ADAPT in kinds:
        out[TFIDF_ADAPT] = {**common, "model.modalities": [LEXICAL], "model.decision.priors": ["adapt"]}
    return out
