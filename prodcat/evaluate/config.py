"""``EvaluateConfig``: which models (a grid over fusion x masking x modality sets), which baselines
and which protocols ``prodcat evaluate`` runs; ``train`` is the base config every cell overrides."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from prodcat.core.config import StrictModel
from prodcat.evaluate.baselines import TfidfConfig
from prodcat.train.config import TrainConfig, apply_overrides


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
    grid: GridSettings | None = Field(default_factory=GridSettings, description="a grid of models "
                                      "(fusion x masking x modality set); null: only `models`")
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named models besides the grid: each a set of dotted "
        "TrainConfig overrides of `train`, e.g. {default: {}, text: {model.modalities: [text]}}")
    protocols: list[Literal["in_platform", "lopo", "in_platform_val", "transfer_val"]] = Field(
        ["in_platform", "lopo"], min_length=1, description="test protocols (in_platform, lopo) and "
        "validation protocols for choosing a model (in_platform_val, transfer_val: every ordered "
        "pair of platforms, for the nested leave-one-platform-out score)")
    lopo_platforms: list[str] | None = Field(None, description="held-out platforms; None: every fold")
    baselines: list[Literal["tfidf"]] = Field(["tfidf"], description="baselines on the same splits")
    tfidf: TfidfConfig = Field(default_factory=lambda: TfidfConfig(max_features=200_000),
                               description="the TF-IDF + linear baseline (a large vocabulary)")
    test_split: str = Field("test", description="in-platform test split")
    reference: str = Field("tfidf-linear", description="model every other one is compared with "
                           "(paired bootstrap over near-duplicate groups)")
    output: str = Field("runs/evaluate", description="output folder, local or s3://")
    plots: bool = Field(True, description="write PNG plots")

    @model_validator(mode="after")
    def _grid_names(self) -> "EvaluateConfig":
        if self.grid is not None and not self.grid.modalities:
            raise ValueError("grid.modalities is empty; e.g. {text: [text]}")
        if self.grid is None and not self.models:
            raise ValueError("nothing to evaluate: give a grid or named models")
        for name, overrides in self.models.items():
            apply_overrides(self.train, overrides)  # raises ConfigError naming the bad field
        return self
