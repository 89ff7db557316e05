"""The flat text baseline many users would pick instead: TF-IDF + a linear classifier (scikit-learn).

One classifier over the label leaves (taxonomy nodes) from title + description; its path is the
leaf's path, so it is always consistent, and it sees neither images nor the hierarchy.

Letters: B products, L levels.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
from pydantic import Field

from prodcat.core.config import StrictModel
from prodcat.core.taxonomy import Taxonomy


class TfidfConfig(StrictModel):
    """TF-IDF features and the linear classifier on top."""

    max_features: int = Field(200_000, ge=1, description="vocabulary size (word n-grams)")
    ngram_max: int = Field(2, ge=1, le=3, description="word n-grams 1..ngram_max")
    min_df: int = Field(2, ge=1, description="ignore n-grams in fewer products")
    sublinear_tf: bool = Field(True, description="1 + log(tf)")
    char_ngrams: bool = Field(False, description="add char 3-5-grams (slower, more robust to typos)")
    C: float = Field(1.0, gt=0, description="inverse regularisation of the linear SVM")
    seed: int = Field(0, description="random state of the classifier")


def product_texts(table: pa.Table) -> list[str]:
    """``title + " . " + description`` per product (description may be null)."""
    titles = table["title"].to_pylist()
    descriptions = table["description"].to_pylist() if "description" in table.column_names else [None] * len(titles)
    return [f"{t or ''} . {d or ''}" for t, d in zip(titles, descriptions)]


class TfidfBaseline:
    """TF-IDF (+ optional char n-grams) → ``LinearSVC`` over label nodes.

    Example:
        >>> model = TfidfBaseline(TfidfConfig(min_df=1)).fit(["red boots", "blue mug"], [3, 9])
        >>> model.predict(["boots"]).tolist()
        [3]
    """

    def __init__(self, config: TfidfConfig | None = None) -> None:
        self.config = config or TfidfConfig()
        self.pipeline = None
        self.fit_seconds = 0.0

    def fit(self, texts: list[str], nodes: np.ndarray) -> "TfidfBaseline":
        """Fit on ``texts`` and their label nodes ``[B]``.

        Raises:
            ValueError: with fewer than 2 distinct labels, or mismatched lengths.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline, make_union
        from sklearn.svm import LinearSVC

        nodes = np.asarray(nodes)
        if len(texts) != len(nodes):
            raise ValueError(f"{len(texts)} texts but {len(nodes)} labels")
        if len(np.unique(nodes)) < 2:
            raise ValueError("the TF-IDF baseline needs at least 2 distinct labels to fit")
        c = self.config
        words = TfidfVectorizer(ngram_range=(1, c.ngram_max), min_df=min(c.min_df, len(texts)),
                                max_features=c.max_features, sublinear_tf=c.sublinear_tf,
                                strip_accents="unicode", lowercase=True)
        features = make_union(words, TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 5), min_df=min(c.min_df, len(texts)),
            max_features=c.max_features, sublinear_tf=True)) if c.char_ngrams else words
        self.pipeline = make_pipeline(features, LinearSVC(C=c.C, random_state=c.seed))
        start = time.perf_counter()
        self.pipeline.fit(texts, nodes)
        self.fit_seconds = time.perf_counter() - start
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        """Label node per text, int64 ``[B]``.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        if self.pipeline is None:
            raise RuntimeError("call fit() before predict()")
        if not texts:
            return np.zeros(0, np.int64)
        return np.asarray(self.pipeline.predict(texts), np.int64)


def node_classes(taxonomy: Taxonomy, nodes: np.ndarray) -> np.ndarray:
    """Per-level classes ``[B, L]`` (-1 padded) of nodes ``[B]`` (for path consistency)."""
    cache: dict[int, np.ndarray] = {}
    out = np.full((len(nodes), taxonomy.num_levels), -1, np.int64)
    for i, node in enumerate(np.asarray(nodes, np.int64)):
        if node > 0:
            if node not in cache:
                cache[node] = taxonomy.targets(int(node))
            out[i] = cache[node]
    return out
