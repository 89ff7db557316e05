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
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from prodcat.core import storage
from prodcat.core.config import StrictModel
from prodcat.core.taxonomy import Taxonomy

FEATURE = "lexical"
WEIGHTS, SETTINGS = "lexical.safetensors", "lexical.json"
#: score of a leaf the linear model never saw in training (below any real decision score)
UNSEEN = -3.0


class LexicalConfig(StrictModel):
    """TF-IDF features and the linear classifier on top (scikit-learn)."""

    analyzer: Literal["word", "char_wb", "word+char"] = Field(
        "word", description="word n-grams, character n-grams inside word boundaries (char_wb: the "
        "usual lever for vocabulary shift between shops), or both side by side")
    max_features: int = Field(50_000, ge=1, description="vocabulary size (word n-grams)")
    ngram_max: int = Field(2, ge=1, le=3, description="word n-grams 1..ngram_max")
    char_ngram_min: int = Field(2, ge=1, le=8, description="shortest character n-gram (char_wb)")
    char_ngram_max: int = Field(5, ge=1, le=8, description="longest character n-gram (char_wb)")
    char_max_features: int = Field(100_000, ge=1, description="vocabulary size (character n-grams)")
    char_max_chars: int = Field(150, ge=10, description="character n-grams read the first this many "
                                "characters of the text (the title and the start of the description; "
                                "word n-grams read all of it): bounds the cost of long descriptions")
    min_df: int = Field(2, ge=1, description="ignore n-grams in fewer products")
    sublinear_tf: bool = Field(True, description="1 + log(tf)")
    C: float = Field(1.0, gt=0, description="inverse regularisation of the linear SVM")
    folds: int = Field(5, ge=2, description="out-of-fold stacking: folds of the training rows")
    seed: int = Field(0, description="random state of the classifier")

    @model_validator(mode="after")
    def _char_range(self) -> "LexicalConfig":
        if self.char_ngram_min > self.char_ngram_max:
            raise ValueError(f"char_ngram_min={self.char_ngram_min} > char_ngram_max="
                             f"{self.char_ngram_max}; e.g. 2 and 5")
        return self

    def describe(self) -> str:
        """A few words for tables: ``word 1-2 + char_wb 2-5, C=0.5``."""
        parts = []
        if self.analyzer in ("word", "word+char"):
            parts.append(f"word 1-{self.ngram_max}")
        if self.analyzer in ("char_wb", "word+char"):
            parts.append(f"char_wb {self.char_ngram_min}-{self.char_ngram_max}")
        return f"{' + '.join(parts)}, C={self.C:g}"


def product_text(title: str | None, description: str | None) -> str:
    """The text the lexical model reads: ``title . description``."""
    return f"{title or ''} . {description or ''}"


def product_texts(table) -> list[str]:
    """``title . description`` per product of a pyarrow table (description may be null or absent)."""
    titles = table["title"].to_pylist()
    descriptions = (table["description"].to_pylist() if "description" in table.column_names
                    else [None] * len(titles))
    return [product_text(t, d) for t, d in zip(titles, descriptions)]


class LexicalScorer:
    """TF-IDF → ``LinearSVC`` over a taxonomy's leaves; :meth:`scores` gives ``[B, C]``.

    Example:
        >>> scorer = LexicalScorer(LexicalConfig(min_df=1)).fit(["red boots", "blue mug"], [3, 9], leaves)
        >>> scorer.scores(["boots"]).shape          # [1, len(leaves)]
    """

    def __init__(self, config: LexicalConfig | None = None) -> None:
        self.config = config or LexicalConfig()
        self.vectorizers: dict = {}              # {"word" | "char": fitted TfidfVectorizer}
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
        nodes, leaves = np.asarray(nodes, np.int64), np.unique(np.asarray(leaves, np.int64))
        if len(texts) != len(nodes):
            raise ValueError(f"{len(texts)} texts but {len(nodes)} labels")
        if len(np.unique(nodes)) < 2:
            raise ValueError("the lexical model needs at least 2 distinct labels to fit")
        if not np.isin(nodes, leaves).all():
            raise ValueError("every label must be one of the given leaves")
        c = self.config
        start = time.perf_counter()
        vectorizers = {kind: make_vectorizer(c, kind, min_df=min(c.min_df, len(texts)))
                       for kind in analyzers(c)}
        x = _hstack([v.fit_transform(texts) for v in vectorizers.values()])
        self.fit_matrix(x, nodes, leaves, vectorizers)
        self.fit_seconds = time.perf_counter() - start
        return self

    def fit_matrix(self, x, nodes, leaves, vectorizers: dict) -> "LexicalScorer":
        """Fit the linear SVM on an already vectorized ``x [B, V]`` (sparse) made by the fitted
        ``vectorizers`` of this config's analyzers (several C values can share one vectorization).

        Raises:
            ValueError: with fewer than 2 distinct labels.
        """
        from sklearn.svm import LinearSVC

        nodes, leaves = np.asarray(nodes, np.int64), np.unique(np.asarray(leaves, np.int64))
        if len(np.unique(nodes)) < 2:
            raise ValueError("the lexical model needs at least 2 distinct labels to fit")
        c = self.config
        svm = LinearSVC(C=c.C, random_state=c.seed).fit(x, nodes)
        self.vectorizers = dict(vectorizers)
        self.leaves = leaves
        self.coef = np.zeros((len(leaves), x.shape[1]), np.float32)
        self.intercept = np.full(len(leaves), UNSEEN, np.float32)
        rows = np.searchsorted(leaves, svm.classes_)
        coef = svm.coef_ if len(svm.classes_) > 2 else np.vstack([-svm.coef_, svm.coef_])
        intercept = svm.intercept_ if len(svm.classes_) > 2 else np.concatenate([-svm.intercept_, svm.intercept_])
        self.coef[rows], self.intercept[rows] = coef, intercept
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
        if not self.vectorizers:
            raise RuntimeError("fit() or load() the lexical model before scoring")
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        x = _hstack([v.transform(texts) for v in self.vectorizers.values()])
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

        if not self.vectorizers:
            raise RuntimeError("nothing to save: fit() first")
        arrays = {"coef": self.coef.astype(np.float16), "intercept": self.intercept,
                  "leaves": self.leaves}
        vocabularies = {}
        for kind, vectorizer in self.vectorizers.items():
            arrays[IDF[kind]] = vectorizer.idf_.astype(np.float32)
            vocabularies[VOCABULARY[kind]] = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
        weights = save(arrays)
        key = hashlib.sha256(weights).hexdigest()[:16]
        storage.write_bytes(storage.join(folder, WEIGHTS), weights)
        storage.write_text(storage.join(folder, SETTINGS), json.dumps(
            {"config": self.config.model_dump(), "fingerprint": key, **vocabularies}))
        return key

    @classmethod
    def load(cls, folder: str) -> "LexicalScorer":
        """The scorer saved in ``folder``.

        Raises:
            FileNotFoundError: when ``folder`` holds no lexical model.
        """
        from safetensors.numpy import load

        settings = json.loads(storage.read_text(storage.join(folder, SETTINGS)))
        arrays = load(storage.read_bytes(storage.join(folder, WEIGHTS)))
        scorer = cls(LexicalConfig.model_validate(settings["config"]))
        for kind in analyzers(scorer.config):
            vectorizer = make_vectorizer(scorer.config, kind, vocabulary=settings[VOCABULARY[kind]])
            vectorizer.idf_ = arrays[IDF[kind]].astype(np.float64)
            scorer.vectorizers[kind] = vectorizer
        scorer.coef = arrays["coef"].astype(np.float32)
        scorer.intercept = arrays["intercept"]
        scorer.leaves = arrays["leaves"].astype(np.int64)
        return scorer

    @staticmethod
    def exists(folder: str) -> bool:
        """True when ``folder`` holds a saved lexical model."""
        return storage.exists(storage.join(folder, SETTINGS))


#: per vectorizer kind: the safetensors name of its IDF weights, the JSON key of its vocabulary
IDF = {"word": "idf", "char": "char_idf"}
VOCABULARY = {"word": "vocabulary", "char": "char_vocabulary"}


def analyzers(config: LexicalConfig) -> list[str]:
    """The vectorizer kinds of ``config.analyzer``: ``["word"]``, ``["char"]`` or both."""
    return {"word": ["word"], "char_wb": ["char"], "word+char": ["word", "char"]}[config.analyzer]


def make_vectorizer(config: LexicalConfig, kind: str, min_df: int | None = None, vocabulary=None):
    """A scikit-learn ``TfidfVectorizer`` of one kind (``word``: word 1..ngram_max grams; ``char``:
    ``char_wb`` char_ngram_min..char_ngram_max grams), lower-cased, accents stripped, float32.
    With ``vocabulary`` it is the fixed vocabulary of a saved model (set ``idf_`` next)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    common = {"sublinear_tf": config.sublinear_tf, "strip_accents": "unicode", "lowercase": True,
              "dtype": np.float32}
    if kind == "word":
        grams = {"analyzer": "word", "ngram_range": (1, config.ngram_max)}
        size = config.max_features
    else:
        grams = {"analyzer": "char_wb", "ngram_range": (config.char_ngram_min, config.char_ngram_max),
                 "preprocessor": TextHead(config.char_max_chars)}
        size = config.char_max_features
    if vocabulary is not None:
        return TfidfVectorizer(vocabulary=vocabulary, **grams, **common)
    return TfidfVectorizer(min_df=config.min_df if min_df is None else min_df, max_features=size,
                           **grams, **common)


class TextHead:
    """The character n-grams' preprocessing: accents stripped, lower-cased, the first ``chars``
    characters (scikit-learn's own steps, which a custom preprocessor replaces, plus the cut)."""

    def __init__(self, chars: int) -> None:
        self.chars = chars

    def __call__(self, text: str) -> str:
        from sklearn.feature_extraction.text import strip_accents_unicode

        return strip_accents_unicode(text[: self.chars].lower())


def _hstack(blocks: list):
    """Sparse ``[B, V_1 + V_2 ...]`` from one or two TF-IDF blocks (CSR)."""
    import scipy.sparse as sp

    return blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")


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
