"""Which products of a new platform look like the label space: the gate self-training reads.

A new catalogue holds categories the model was never trained on (with Flipkart held out, 74 % of
Flipkart's products; for a model trained on Flipkart, 89 % of Myntra's). Self-training
(:meth:`prodcat.models.decision.DecisionModel.adapt`) fits a regression on the products the
combination is sure of; a product of an unseen category that it is sure of teaches that
regression a wrong leaf. The gate is out-of-distribution detection on a frozen embedding: a
product's score is the largest cosine between its L2-normalised embedding and a leaf's mean
training embedding (the class-centroid form of feature-space detectors: Lee et al., NeurIPS 2018;
Sun et al., ICML 2022), and it passes when the score is at least the ``quantile`` quantile of the
scores of in-space products the model was not fitted on (the training platforms' in-platform
held-out products). Which score to use was measured on validation pairs only:
``benchmarks/open_set.py`` (stop 45; docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prodcat.models.components import _normalise


@dataclass
class LabelSpaceGate:
    """The centroid gate over one embedding.

    Attributes:
        feature: the embedding it reads (a model input, e.g. ``text``).
        centroids: ``[K, D]`` float32, L2-normalised mean training embedding of each of the K
            leaves the training rows hold.
        threshold: the least score (a cosine in [-1, 1]) of a product inside the label space.
        quantile: the share in (0, 1) of the reference products the threshold rejects.
        reference: how many held-out products the threshold was set on.
    """

    feature: str
    centroids: np.ndarray
    threshold: float
    quantile: float
    reference: int

    @classmethod
    def fit(cls, feature: str, x: np.ndarray, nodes: np.ndarray, reference: np.ndarray,
            quantile: float = 0.05) -> LabelSpaceGate:
        """Centroids of the training embeddings ``x [N, D]`` by label ``nodes [N]``; the threshold
        from the in-space held-out embeddings ``reference [M, D]``.

        Raises:
            ValueError: mismatched lengths, no training or reference row, or ``quantile``
                outside (0, 1).
        """
        x, nodes = _normalise(x), np.asarray(nodes)
        if len(x) != len(nodes) or not len(x):
            raise ValueError(f"the gate needs training rows with one label each, got {len(x)} rows "
                             f"and {len(nodes)} labels")
        if not len(reference):
            raise ValueError("the gate needs in-space held-out products to set its threshold on "
                             "(model.decision.heldout with in_platform, and validation rows)")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"gate_quantile must be in (0, 1), got {quantile}")
        leaves = np.unique(nodes)
        centroids = _normalise(np.stack([x[nodes == leaf].mean(axis=0) for leaf in leaves])).astype(np.float32)
        gate = cls(feature, centroids, 0.0, float(quantile), int(len(reference)))
        gate.threshold = float(np.quantile(gate.scores(reference), quantile))
        return gate

    def scores(self, x: np.ndarray) -> np.ndarray:
        """``[B]`` the largest cosine between each embedding of ``x [B, D]`` and a centroid (a
        zero vector scores 0).

        Raises:
            ValueError: when D is not the centroids' width.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"gate on {self.feature!r}: expected [B, {self.centroids.shape[1]}] "
                             f"embeddings, got {list(x.shape)}")
        out = np.empty(len(x))
        for start in range(0, len(x), 4096):
            out[start:start + 4096] = (_normalise(x[start:start + 4096])
                                       @ self.centroids.T.astype(np.float64)).max(axis=1)
        return out

    def inside(self, x: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """``[B]`` bool: which products pass; one whose embedding is absent (``present`` False)
        passes (nothing to judge it by)."""
        passed = self.scores(x) >= self.threshold
        if present is not None:
            passed |= ~np.asarray(present, bool)
        return passed

    def record(self) -> dict:
        """What the checkpoint's JSON keeps (the centroids go with the weights' tensors)."""
        return {"kind": "centroid", "feature": self.feature, "threshold": self.threshold,
                "quantile": self.quantile, "reference": self.reference,
                "leaves": int(len(self.centroids))}

    @classmethod
    def from_record(cls, record: dict, centroids: np.ndarray) -> LabelSpaceGate:
        """Rebuild from :meth:`record` and the ``gate.centroids`` tensor."""
        return cls(record["feature"], np.asarray(centroids, np.float32), float(record["threshold"]),
                   float(record["quantile"]), int(record["reference"]))
