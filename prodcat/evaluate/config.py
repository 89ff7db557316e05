"""``EvaluateConfig``: which models (named overrides and/or a grid over fusion x masking x modality
sets), which reference rows (:mod:`prodcat.evaluate.references`), which protocols and seeds
``prodcat evaluate`` runs; ``train`` is the base config every model overrides."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from prodcat.core.config import StrictModel
from prodcat.evaluate.finetuning import FinetuneSettings
from prodcat.train.config import TrainConfig, apply_overrides

#: the tuned lexical baseline's grid, chosen on held-out products by the nested protocol: word
#: n-grams, or word and character n-grams side by side, each at two strengths of the linear SVM
REFERENCE_LEXICAL_GRID = [{"analyzer": "word", "C": 0.3}, {"analyzer": "word", "C": 1.0},
                          {"analyzer": "word+char", "C": 0.3}, {"analyzer": "word+char", "C": 1.0}]


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
    references: list[Literal["tfidf", "logreg", "tfidf+logreg-text", "tfidf-adapt"]] = Field(
        ["tfidf", "logreg", "tfidf+logreg-text"], description="reference rows on the same folds "
        "(prodcat.evaluate.references): tfidf: TF-IDF + linear SVM over the leaves, its n-grams and C "
        "chosen on held-out products of the training platforms (the baseline every model is compared "
        "with); logreg: a flat logistic regression on each frozen embedding the models read; "
        "tfidf+logreg-text: the sum of those two's calibrated log-probabilities, equal weights; "
        "tfidf-adapt: tfidf with the test products' label distribution estimated by EM (prior adapt), "
        "the baseline given the same adaptation as a model that chose it")
    reference_lexical_grid: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(g) for g in REFERENCE_LEXICAL_GRID],
        description="the tuned baseline's choices (LexicalConfig overrides of train.lexical)")
    seeds: list[int] = Field([0], min_length=1, description="training seeds (each a different "
                             "training subsample when train.data.max_train_products is set, and a "
                             "different initialisation): figures are given as the mean and spread")
    predictions: bool = Field(True, description="write every fold's predictions per model and seed "
                              "as Parquet under <output>/predictions")
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings, description="a text encoder "
                                       "fine-tuned inside each fold, on its training platforms only, "
                                       "for the models that read its feature (ft_text)")
    test_split: str = Field("test", description="in-platform test split")
    adapt_pool: Literal["split", "platform"] = Field(
        "platform", description="what a model that adapts (prior adapt, self-training) reads the "
        "inputs of, on a validation fold whose scored platform it was not trained on (transfer_val): "
        "platform, every product of that platform but the in-platform test split, as many as a "
        "leave-one-platform-out fold adapts to (its whole held-out platform); split, only the split "
        "it scores (before stop 42). Other folds adapt to every product of the splits they score "
        "either way. Labels are never read")
    reference: str = Field("tfidf", description="model every other one is compared with "
                           "(paired bootstrap over near-duplicate groups)")
    output: str = Field("runs/evaluate", description="output folder, local or s3://")
    plots: bool = Field(True, description="write PNG plots")
    save_models: list[str] = Field([], description="models whose leave-one-platform-out checkpoints "
                                   "are written (runs/<fold>/<model>-seed<s>/model) also when they "
                                   "are decision-level fusion models (neural runs always write "
                                   "theirs): `prodcat onboard measure` reuses them")

    @model_validator(mode="after")
    def _grid_names(self) -> "EvaluateConfig":
        if self.grid is not None and not self.grid.modalities:
            raise ValueError("grid.modalities is empty; e.g. {text: [text]}")
        if self.grid is None and not self.models:
            raise ValueError("nothing to evaluate: give a grid or named models")
        for name, overrides in self.models.items():
            apply_overrides(self.train, overrides)  # raises ConfigError naming the bad field
        for overrides in self.reference_lexical_grid:
            apply_overrides(self.train, {f"lexical.{k}": v for k, v in overrides.items()})
        return self
