"""Suggested names: the title terms that set a cluster apart, by class-based TF-IDF.

c-TF-IDF (Grootendorst, "BERTopic", arXiv 2203.05794, eq. 1) treats all titles of a cluster as
one document: ``W(t, c) = tf(t, c) / |c| * log(1 + A / f(t))``, with ``tf(t, c)`` the count of
term t in cluster c, ``|c|`` the cluster's number of words, ``A`` the mean number of words per
cluster and ``f(t)`` the count of t over all clusters. The unassigned products are a class of
their own (as BERTopic's outlier topic), so their words lower the weight of generic terms too.
Brand names are removed from the titles first: a cluster named after a brand says nothing about
a product type. Counting is scikit-learn's ``CountVectorizer``.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

from prodcat.recategorize.config import NOISE

_TOKEN = r"(?u)\b[^\W\d_][^\W\d_]+\b"  # words of 2+ letters: no sizes, codes or prices


def _strip_brand(title: str, brand: str | None) -> str:
    if not brand:
        return title
    return re.sub(re.escape(brand), " ", title, flags=re.IGNORECASE)


def class_tfidf(titles, clusters, brands=None) -> tuple[np.ndarray, list[int], np.ndarray]:
    """c-TF-IDF weights of the words of ``titles`` per cluster.

    Args:
        titles: ``[B]`` product titles.
        clusters: ``[B]`` int cluster per product (-1: unassigned, a class of its own).
        brands: ``[B]`` brand per product (None allowed), removed from its title.

    Returns:
        ``(weights [K', V], classes (the K' cluster ids, -1 included when present), vocabulary [V])``.
    """
    titles = [str(t) for t in titles]
    brands = list(brands) if brands is not None else [None] * len(titles)
    clusters = np.asarray(clusters)
    classes = sorted(int(c) for c in np.unique(clusters))
    docs = [" ".join(_strip_brand(t, b) for t, b, c in zip(titles, brands, clusters) if c == k)
            for k in classes]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=_TOKEN, lowercase=True)
    try:
        counts = vectorizer.fit_transform(docs).toarray().astype(np.float64)  # [K', V]
    except ValueError:  # no word at all
        return np.zeros((len(classes), 0)), classes, np.asarray([], object)
    words = counts.sum(axis=1, keepdims=True)
    tf = counts / np.maximum(words, 1)
    idf = np.log(1 + words.mean() / np.maximum(counts.sum(axis=0), 1))
    return tf * idf, classes, vectorizer.get_feature_names_out()


def top_terms(titles, clusters, brands=None, n: int = 3) -> dict[int, list[str]]:
    """The ``n`` highest-weighted c-TF-IDF terms of each cluster (noise left out of the result)."""
    weights, classes, vocabulary = class_tfidf(titles, clusters, brands)
    out = {}
    for row, cluster in enumerate(classes):
        if cluster == NOISE:
            continue
        order = np.argsort(-weights[row], kind="stable")[:n] if weights.shape[1] else []
        out[cluster] = [str(vocabulary[i]) for i in order if weights[row, i] > 0]
    return out


def suggest_name(terms: list[str], fallback: str) -> str:
    """A readable name from a cluster's terms ("sneakers / sports / running" →
    "Sneakers Sports Running"), ``fallback`` when there are none."""
    return " ".join(t.capitalize() for t in terms) if terms else fallback
