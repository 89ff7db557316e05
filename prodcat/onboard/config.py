"""Typed configs of onboarding: mapping suggestions for one export (:class:`SuggestConfig`,
``prodcat catalog suggest-mapping``) and their measurement on the leave-one-platform-out folds
(:class:`MeasureConfig`, ``prodcat onboard measure``, the main job's ``onboard`` stage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prodcat.core.config import StrictModel


class ScoringSettings(StrictModel):
    """How the suggestion's bulk scoring runs (a :class:`prodcat.score.ScoreConfig` subset)."""

    batch_size: int = Field(256, gt=0, description="rows per stage batch")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per scoring actor")
    pool_size: int = Field(1, gt=0, description="scoring actors per stage")
    device: str = Field("auto", description="auto, cpu or cuda")


class SuggestConfig(StrictModel):
    """``prodcat catalog suggest-mapping``: an unmapped export → suggested Google categories."""

    adapter: str = Field(description="the platform's adapter (built-in name or AdapterConfig YAML); "
                         "its `mapping` is ignored: the export is read unmapped")
    model: str = Field(description="a cascade (cascade.json or its folder) or one checkpoint folder")
    output: str = Field(description="folder for mapping.yaml, suggestions.parquet, review.html, "
                        "summary.json and the predictions (local or s3://)")
    mode: Literal["cascade", "text", "multimodal"] = Field(
        "cascade", description="with a cascade: both stages, or one (a checkpoint runs alone)")
    features_from: str | None = Field(None, description="embedding store whose vectors are reused "
                                      "where the encoder fingerprints match (the rest is encoded)")
    max_per_category: int | None = Field(
        50, ge=1, description="products scored per source category, chosen by a hash of product_id "
        "(stored ones first with features_from); None: all")
    top_k: int = Field(3, ge=1, description="suggestions per source category")
    ranking: Literal["votes", "names"] = Field(
        "names", description="order of the top_k candidates (the categories most products voted "
        "for): by those votes, or by the similarity of their names to the source category's (chosen "
        "on the leave-one-platform-out folds)")
    examples: int = Field(4, ge=0, description="example products shown per source category")
    taxonomy: str | None = Field(None, description="Google taxonomy file for paths; default the shared one")
    seed: str = Field("prodcat", description="salt of the sampling hash")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    page: bool = Field(True, description="write review.html (images inlined)")


class MeasureConfig(StrictModel):
    """``prodcat onboard measure``: each platform met as a new one (leave-one-platform-out): a model
    trained without it suggests its mapping, compared with its hand-made mapping; and partial
    paths (abstention) per fold."""

    products: str = Field(description="product table (the run's catalogue)")
    embeddings: str = Field(description="embedding store of the run (vectors reused)")
    output: str = Field(description="folder for the per-fold suggestions and the report")
    evaluation: str | None = Field(
        None, description="evaluation folder (`prodcat evaluate`) whose leave-one-platform-out "
        "checkpoints of `model_name` are reused when present (a fold model is trained otherwise)")
    model_name: str = Field("default", description="the evaluation's model to reuse")
    adapt: bool = Field(True, description="adapt each fold's model to its held-out platform's "
                        "products (inputs only, as `prodcat onboard adapt` does) before it is measured, "
                        "when the model adapts (the default self-trains on a new platform); false: "
                        "measure it as trained")
    train: str = Field("configs/train.default.yaml", description="TrainConfig YAML of the fold "
                       "models trained here (each on the other platforms, in their label space)")
    train_overrides: list[str] = Field([], description="dotted overrides of that config")
    platforms: list[str] | None = Field(None, description="platforms to hold out; None: every one")
    source: Literal["products", "export"] = Field(
        "products", description="products: the held-out platform's rows of the product table "
        "(stored vectors, mapped categories only, cheap); export: its whole export read through its "
        "adapter without a mapping, as a new platform arrives (rows not in the store are encoded)")
    max_per_category: int | None = Field(25, ge=1, description="products scored per source category")
    abstain_target: float = Field(0.95, ge=0, le=1, description="the target precision reported per fold")
    ranking: Literal["nested", "votes", "names"] = Field(
        "nested", description="order of the candidates: nested = for each held-out platform the "
        "ranking with the better top-1 agreement on the other platforms")
    agreement_goal: float = Field(0.9, ge=0, le=1, description="the top-1 agreement a recommended "
                                  "confidence threshold must reach on the other platforms")
    page: bool = Field(True, description="write each fold's review.html")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)


class ChooseConfig(StrictModel):
    """``prodcat onboard choose``: the model for a new platform chosen on a few of its labelled
    products, among candidate settings of the default trained on the other platforms."""

    products: str = Field(description="product table holding the training platforms and the new one")
    embeddings: str = Field(description="embedding store of those products")
    platform: str = Field(description="the new platform (its rows of the product table)")
    output: str = Field(description="folder for the candidates, the chosen model (model/) and the report")
    train: str = Field("configs/train.default.yaml", description="TrainConfig YAML every candidate "
                       "starts from (each trained on the other platforms, in their label space)")
    train_overrides: list[str] = Field([], description="dotted overrides of that config, for every candidate")
    candidates: dict[str, list[str]] = Field(
        default_factory=lambda: {"default": [], "default-no-label": ["model.label_prior=none"]},
        description="name → dotted overrides of the train config; the first is the reference the "
        "choice keeps unless another beats it on the labelled products by a real difference (the "
        "default's label names cost 14-17 hF points with Flipkart as the new platform and help "
        "elsewhere: docs/evaluation.md, 'What k labelled products of a new platform would buy')")
    labelled_splits: list[str] = Field(
        ["val"], min_length=1, description="splits of the new platform's rows whose categories the "
        "choice reads; its other labelled rows, if any, only check the choice afterwards")
    max_labelled: int | None = Field(None, ge=2, description="at most this many labelled products, "
                                     "whole near-duplicate groups drawn (seed) as `sampling` says")
    sampling: Literal["disagreement", "random"] = Field(
        "disagreement", description="which labelled products a `max_labelled` cap reads: "
        "disagreement, groups drawn only among those where a candidate predicts another category "
        "than the first (known from the candidates' predictions, before any label is read; where "
        "they agree a label cannot tell them apart, so those labels are wasted); random, groups "
        "drawn from all of them. benchmarks/labelled_choice.py: with Flipkart as the new platform, "
        "10 labelled products drawn where the candidates disagree drop the label names in 62-100 % "
        "of draws, 10 drawn at random in 13-20 % (docs/evaluation.md)")
    propose: int | None = Field(None, ge=1, description="instead of choosing: write to_label.csv, "
                                "about this many products of the new platform (whole groups, any "
                                "split, no label read) where the candidates disagree, each with "
                                "every candidate's prediction and an empty category_id column to "
                                "fill; then run again with `labels` set to the filled file")
    labels: str | None = Field(None, description="a CSV or Parquet file of product_id, category_id "
                               "(a Google category id of the taxonomy; rows without one are "
                               "skipped): the new platform's labelled products the choice reads, "
                               "instead of its rows in labelled_splits (to_label.csv filled in)")
    seed: int = Field(0, description="seed of that draw and of the paired bootstrap")
    adapt: bool = Field(True, description="adapt each candidate to the new platform's products "
                        "(inputs only, as `prodcat onboard adapt` does) before it is compared")
