"""What a training run returns (:func:`prodcat.train.trainer.train`), neural or decision-level."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        checkpoint: ``<output>/model``, the best epoch's checkpoint (calibrated).
        metrics: the best epoch's reported metrics.
        history: reported metrics of every epoch, in order.
        seconds_per_epoch: mean training-pass time per epoch (s, validation excluded).
        peak_memory_mb: the largest worker max-RSS reported (MiB).
        temperature: the fitted softmax temperature.
        wall_seconds: the whole call, data loading and calibration included (s).
        resumed_after: epochs after which the loop restarted from a checkpoint (a worker-group
            restart under ``FailureConfig``, or a rerun with the same output and name).
        data: the products used against the catalogue's (:func:`prodcat.train.features.data_counts`)
            plus ``train_rows`` and ``val_rows`` of this run.
    """

    checkpoint: str
    metrics: dict
    history: list[dict]
    seconds_per_epoch: float
    peak_memory_mb: float
    temperature: float
    wall_seconds: float
    run_path: str = ""
    resumed_after: list[int] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    model: Any = field(default=None, repr=False)   # the fitted model in memory (decision-level fusion)

    def to_json(self) -> str:
        """``train_result.json`` (everything but the in-memory model)."""
        return json.dumps({k: v for k, v in self.__dict__.items() if k != "model"}, indent=2, default=float)
