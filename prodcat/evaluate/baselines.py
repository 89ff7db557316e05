"""The flat text baseline many users would pick instead: TF-IDF + a linear classifier (scikit-learn).

One classifier over the label leaves (the same TF-IDF + linear model as the lexical modality,
:mod:`prodcat.models.lexical`) (taxonomy nodes) from title + description; its path is the
leaf's path, so it is always consistent, and it sees neither images nor the hierarchy.

Letters: B products, L levels.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from prodcat.core.taxonomy import Taxonomy
from prodcat.models.lexical import LexicalConfig, LexicalScorer, product_text

#: the baseline's settings are the lexical model's (one TF-IDF + linear implementation); the
#: baseline gets a larger vocabulary by default (``EvaluateConfig.tfidf``)
TfidfConfig = LexicalConfig


def product_texts(table: pa.Table) -> list[str]:
    """``title . description`` per product of a table (description may be null)."""
    titles = table["title"].to_pylist()
    descriptions = table["description"].to_pylist() if "description" in table.column_names else [None] * len(titles)
    return [product_text(t, d) for t, d in zip(titles, descriptions)]


class TfidfBaseline:
    """TF-IDF → ``LinearSVC`` over label nodes (:class:`prodcat.models.lexical.LexicalScorer`),
    predicting the best-scoring leaf: a flat model, so every path it outputs is valid.

    Example:
        >>> model = TfidfBaseline(TfidfConfig(min_df=1)).fit(["red boots", "blue mug"], [3, 9])
        >>> model.predict(["boots"]).tolist()
        [3]
    """

    def __init__(self, config: TfidfConfig | None = None) -> None:
        self.scorer = LexicalScorer(config)

    @property
    def fit_seconds(self) -> float:
        return self.scorer.fit_seconds

    def fit(self, texts: list[str], nodes: np.ndarray) -> "TfidfBaseline":
        """Fit on ``texts`` and their label nodes ``[B]``.

        Raises:
            ValueError: with fewer than 2 distinct labels, or mismatched lengths.
        """
        self.scorer.fit(texts, nodes, np.unique(np.asarray(nodes, np.int64)))
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        """Label node per text, int64 ``[B]``.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        return self.scorer.predict(texts)


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
