"""``EvaluateConfig``: which models (a grid over fusion x masking x modality sets), which baselines
and which protocols ``prodcat evaluate`` runs; ``train`` is the base config every cell overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prodcat.core.config import StrictModel
from prodcat.evaluate.baselines import TfidfConfig
from prodcat.train.config import TrainConfig


class GridSettings(StrictModel):
    """The model grid; every combination is trained and scored."""

    fusions: list[str] = Field(["late"], min_length=1, description="model.fusion values")
    maskings: list[str] = Field(["hard"], min_length=1, description="model.masking values")
    modalities: dict[str, list[str]] = Field(
        default_factory=lambda: {"text": ["text"], "image": ["image"], "text+image": ["text", "image"]},
        description="named modality sets → model.modalities")


class EvaluateConfig(StrictModel):
    """``prodcat evaluate`` settings; ``train`` is the base config every grid cell overrides."""

    train: TrainConfig = Field(default_factory=TrainConfig, description="base training config")
    grid: GridSettings = Field(default_factory=GridSettings)
    protocols: list[Literal["in_platform", "lopo"]] = Field(["in_platform", "lopo"], min_length=1)
    lopo_platforms: list[str] | None = Field(None, description="held-out platforms; None: every fold")
    baselines: list[Literal["tfidf"]] = Field(["tfidf"], description="baselines on the same splits")
    tfidf: TfidfConfig = Field(default_factory=TfidfConfig)
    test_split: str = Field("test", description="in-platform test split")
    output: str = Field("runs/evaluate", description="output folder, local or s3://")
    plots: bool = Field(True, description="write PNG plots")

    @model_validator(mode="after")
    def _grid_names(self) -> "EvaluateConfig":
        if not self.grid.modalities:
            raise ValueError("grid.modalities is empty; e.g. {text: [text]}")
        return self
