"""Calibrating a trained model where it is used: on the serving path, on held-out products.

The temperature is fitted on the calibration split (``calib``: never seen by early stopping, which
uses ``val``), on the logits the service computes (masked by the model's predicted parents), so
that the path confidence the cascade routes on matches how often the output path is exactly right
(:func:`prodcat.models.calibration.fit_temperature`). The result carries the expected calibration
error before and after and the reliability diagram's data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from prodcat.core.metrics import class_paths, node_paths
from prodcat.models.calibration import (
    expected_calibration_error,
    fit_temperature,
    path_confidence,
    reliability,
)
from prodcat.models.checkpoint import LoadedModel
from prodcat.train.features import FeatureTable
from prodcat.train.lexical import model_inputs


@dataclass
class Calibration:
    """A fitted temperature and what it changed on the products it was fitted on.

    Attributes:
        temperature: T > 0 (1.0 when there was nothing to fit).
        ece_before, ece_after: expected calibration error in [0, 1] of the path confidence at
            T = 1 and at T.
        reliability_before, reliability_after: :func:`prodcat.models.calibration.reliability`.
        products: how many products it was fitted on; accuracy: their exact-path accuracy.
    """

    temperature: float
    ece_before: float
    ece_after: float
    reliability_before: dict
    reliability_after: dict
    products: int
    accuracy: float

    def to_dict(self) -> dict:
        return asdict(self)


def serving_predictions(loaded: LoadedModel, rows: FeatureTable) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``(serving logits, output classes [B, L], exactly right [B])`` of ``loaded`` on ``rows``."""
    logits, classes = loaded.serving_logits(*model_inputs(loaded, rows))
    correct = (class_paths(loaded.taxonomy, classes)
               == node_paths(loaded.taxonomy, rows.column("node"))).all(axis=1)
    return logits, classes, correct


def calibrate(loaded: LoadedModel, rows: FeatureTable) -> Calibration:
    """Fit the serving-path temperature of ``loaded`` on ``rows`` (the calibration split)."""
    logits, classes, correct = serving_predictions(loaded, rows)
    temperature = fit_temperature(logits, classes, correct)
    before = path_confidence(logits, classes, 1.0)
    after = path_confidence(logits, classes, temperature)
    return Calibration(
        temperature=temperature,
        ece_before=expected_calibration_error(before, correct),
        ece_after=expected_calibration_error(after, correct),
        reliability_before=reliability(before, correct), reliability_after=reliability(after, correct),
        products=int(len(correct)), accuracy=float(correct.mean()) if len(correct) else 0.0)
