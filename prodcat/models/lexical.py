"""The lexical modality: TF-IDF + a linear classifier's scores over the taxonomy's leaves.

Frozen sentence encoders blur the words that name a product type; a bag of words keeps them, and
in-platform it is hard to beat. Here the linear model's decision scores (one per leaf label) become
one more input feature of the fusion model, ``lexical`` (``[B, C]``, C = the taxonomy's leaves):
decision-level stacking (Wolpert, 1992). For training rows the scores are *out-of-fold*: K models
fitted on the other folds of the training rows (folds by near-duplicate group), so the fusion
model learns how far to trust the scores on products the linear model did not memorise.

:class:`LexicalScorer` is also the project's TF-IDF + linear baseline (``prodcat evaluate``), and
it is stored in a checkpoint without pickle: the vocabulary and settings as JSON, the IDF weights,
coefficients (float16) and intercepts as safetensors, so a model file cannot run code.

Letters: B products, V vocabulary, C leaf labels.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
from pydantic import Field

from prodcat.core import storage
from prodcat.core.config import StrictModel
from prodcat.core.taxonomy import Taxonomy

FEATURE = "lexical"
WEIGHTS, SETTINGS = "lexical.safetensors", "lexical.json"
#: score of a leaf the linear model never saw in training (below any real decision score)
UNSEEN = -3.0


class LexicalConfig(StrictModel):
    """TF-IDF features and the linear classifier on top (scikit-learn)."""

    max_features: int = Field(50_000, ge=1, description="vocabulary size (word n-grams)")
    ngram_max: int = Field(2, ge=1, le=3, description="word n-grams 1..ngram_max")
    min_df: int = Field(2, ge=1, description="ignore n-grams in fewer products")
    sublinear_tf: bool = Field(True, description="1 + log(tf)")
    C: float = Field(1.0, gt=0, description="inverse regularisation of the linear SVM")
    folds: int = Field(5, ge=2, description="out-of-fold stacking: folds of the training rows")
    seed: int = Field(0, description="random state of the classifier")


def product_text(title: str | None, description: str | None) -> str:
    """The text the lexical model reads: ``title . description``."""
    return f"{title or ''} . {description or ''}"


class LexicalScorer:
    """TF-IDF → ``LinearSVC`` over a taxonomy's leaves; :meth:`scores` gives ``[B, C]``.

    Example:
        >>> scorer = LexicalScorer(LexicalConfig(min_df=1)).fit(["red boots", "blue mug"], [3, 9], leaves)
        >>> scorer.scores(["boots"]).shape          # [1, len(leaves)]
    """

    def __init__(self, config: LexicalConfig | None = None) -> None:
        self.config = config or LexicalConfig()
        self.vectorizer = None
        self.coef: np.ndarray | None = None        # [C, V] float32
        self.intercept: np.ndarray | None = None   # [C]
        self.leaves: np.ndarray | None = None      # [C] taxonomy nodes, the output order
        self.fit_seconds = 0.0

    # ------------------------------------------------------------------ fitting
    def fit(self, texts: list[str], nodes, leaves) -> "LexicalScorer":
        """Fit on ``texts`` and their label nodes ``[B]``; ``leaves`` ``[C]`` fixes the output
        order (sorted; labels outside it are refused).

        Raises:
            ValueError: with fewer than 2 distinct labels, mismatched lengths, or a label that is
                not among ``leaves``.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        nodes, leaves = np.asarray(nodes, np.int64), np.unique(np.asarray(leaves, np.int64))
        if len(texts) != len(nodes):
            raise ValueError(f"{len(texts)} texts but {len(nodes)} labels")
        if len(np.unique(nodes)) < 2:
            raise ValueError("the lexical model needs at least 2 distinct labels to fit")
        if not np.isin(nodes, leaves).all():
            raise ValueError("every label must be one of the given leaves")
        c = self.config
        start = time.perf_counter()
        self.vectorizer = TfidfVectorizer(
            ngram_range=(1, c.ngram_max), min_df=min(c.min_df, len(texts)), max_features=c.max_features,
            sublinear_tf=c.sublinear_tf, strip_accents="unicode", lowercase=True, dtype=np.float32)
        x = self.vectorizer.fit_transform(texts)
        svm = LinearSVC(C=c.C, random_state=c.seed).fit(x, nodes)
        self.leaves = leaves
        self.coef = np.zeros((len(leaves), x.shape[1]), np.float32)
        self.intercept = np.full(len(leaves), UNSEEN, np.float32)
        rows = np.searchsorted(leaves, svm.classes_)
        coef = svm.coef_ if len(svm.classes_) > 2 else np.vstack([-svm.coef_, svm.coef_])
        intercept = svm.intercept_ if len(svm.classes_) > 2 else np.concatenate([-svm.intercept_, svm.intercept_])
        self.coef[rows], self.intercept[rows] = coef, intercept
        self.fit_seconds = time.perf_counter() - start
        return self

    @property
    def dim(self) -> int:
        """C, the number of scores per product."""
        return 0 if self.leaves is None else len(self.leaves)

    def scores(self, texts: list[str]) -> np.ndarray:
        """Decision scores ``[B, C]`` float32 (a leaf never seen in training: :data:`UNSEEN`).

        Raises:
            RuntimeError: before :meth:`fit` or :meth:`load`.
        """
        if self.vectorizer is None:
            raise RuntimeError("fit() or load() the lexical model before scoring")
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        x = self.vectorizer.transform(texts)
        return np.asarray(x @ self.coef.T + self.intercept, np.float32)

    def predict(self, texts: list[str]) -> np.ndarray:
        """The best-scoring leaf node per text, int64 ``[B]``."""
        if not len(texts):
            return np.zeros(0, np.int64)
        return self.leaves[self.scores(texts).argmax(axis=1)]

    # ------------------------------------------------------------------ persistence (no pickle)
    def save(self, folder: str) -> str:
        """Write ``lexical.json`` and ``lexical.safetensors`` into ``folder``; returns the
        fingerprint (sha256 of the weights, 16 hex digits).

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        from safetensors.numpy import save

        if self.vectorizer is None:
            raise RuntimeError("nothing to save: fit() first")
        weights = save({"idf": self.vectorizer.idf_.astype(np.float32),
                        "coef": self.coef.astype(np.float16), "intercept": self.intercept,
                        "leaves": self.leaves})
        key = hashlib.sha256(weights).hexdigest()[:16]
        vocabulary = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
        storage.write_bytes(storage.join(folder, WEIGHTS), weights)
        storage.write_text(storage.join(folder, SETTINGS), json.dumps(
            {"config": self.config.model_dump(), "fingerprint": key, "vocabulary": vocabulary}))
        return key

    @classmethod
    def load(cls, folder: str) -> "LexicalScorer":
        """The scorer saved in ``folder``.

        Raises:
            FileNotFoundError: when ``folder`` holds no lexical model.
        """
        from safetensors.numpy import load
        from sklearn.feature_extraction.text import TfidfVectorizer

        settings = json.loads(storage.read_text(storage.join(folder, SETTINGS)))
        arrays = load(storage.read_bytes(storage.join(folder, WEIGHTS)))
        scorer = cls(LexicalConfig.model_validate(settings["config"]))
        c = scorer.config
        scorer.vectorizer = TfidfVectorizer(
            ngram_range=(1, c.ngram_max), sublinear_tf=c.sublinear_tf, strip_accents="unicode",
            lowercase=True, dtype=np.float32, vocabulary=settings["vocabulary"])
        scorer.vectorizer.idf_ = arrays["idf"].astype(np.float64)
        scorer.coef = arrays["coef"].astype(np.float32)
        scorer.intercept = arrays["intercept"]
        scorer.leaves = arrays["leaves"].astype(np.int64)
        return scorer

    @staticmethod
    def exists(folder: str) -> bool:
        """True when ``folder`` holds a saved lexical model."""
        return storage.exists(storage.join(folder, SETTINGS))


def fit_out_of_fold(texts: list[str], nodes, groups, taxonomy: Taxonomy,
                    config: LexicalConfig | None = None) -> tuple[LexicalScorer, np.ndarray]:
    """``(scorer fitted on all rows, out-of-fold scores [B, C])`` for stacking: each row's scores
    come from a model fitted on the other folds (folds by ``groups``, scikit-learn's
    ``GroupKFold``), so near-duplicates of a row never score it.

    A fold whose other rows hold a single category cannot fit a classifier: its rows keep the
    ``UNSEEN`` score for every leaf, and a warning counts them.

    Raises:
        ValueError: as :meth:`LexicalScorer.fit`, or when the rows form fewer than 2 groups.
    """
    import warnings

    from sklearn.model_selection import GroupKFold

    config = config or LexicalConfig()
    leaves = np.sort(taxonomy.leaves)
    nodes = np.asarray(nodes, np.int64)
    n_groups = len(np.unique(np.asarray(groups, object).astype(str)))
    if n_groups < 2:
        raise ValueError(f"out-of-fold lexical scores need rows from 2 or more near-duplicate groups; "
                         f"the {len(texts)} training rows form {n_groups}")
    full = LexicalScorer(config).fit(texts, nodes, leaves)
    oof = np.full((len(texts), len(leaves)), UNSEEN, np.float32)
    splitter = GroupKFold(n_splits=min(config.folds, n_groups))
    unscored = 0
    for fit_rows, score_rows in splitter.split(np.zeros(len(texts)), nodes, groups):
        if len(np.unique(nodes[fit_rows])) < 2:
            unscored += len(score_rows)
            continue
        part = LexicalScorer(config).fit([texts[i] for i in fit_rows], nodes[fit_rows], leaves)
        oof[score_rows] = part.scores([texts[i] for i in score_rows])
    if unscored:
        warnings.warn(f"{unscored} of {len(texts)} training rows keep the 'unseen' lexical score: the "
                      "other folds' rows of their fold hold a single category", stacklevel=2)
    return full, oof
