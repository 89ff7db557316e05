"""Typed config of ``prodcat cascade fit`` (:class:`CascadeFitConfig`); bulk scoring's config is
:class:`prodcat.score.config.ScoreConfig`."""

from __future__ import annotations

from pydantic import Field

from prodcat.cascade.policy import CascadeGoal
from prodcat.core.config import StrictModel


class CascadeFitConfig(StrictModel):
    """``prodcat cascade fit``."""

    text_model: str = Field(description="stage-1 checkpoint (text encoder + text-only head)")
    multimodal_model: str = Field(description="stage-2 checkpoint (image/joint encoders + fusion)")
    products: str = Field("runs/sample/catalog/products.parquet", description="product table")
    embeddings: str = Field("runs/sample/embeddings", description="embedding store both were trained on")
    output: str = Field("runs/sample/cascade", description="folder for cascade.json and the report")
    bundle: bool = Field(True, description="copy both checkpoints into the output folder, so it "
                         "works wherever it is copied (False: name them by absolute path)")
    goal: CascadeGoal = Field(default_factory=CascadeGoal, description="what tau is chosen for")
    confidence_mode: str = Field("path", description="path, min or leaf (prodcat.cascade)")
    calib_split: str = Field("calib", description="split temperatures and tau are fitted on (held "
                             "out from training and early stopping)")
    test_split: str = Field("test", description="split the chosen tau is reported on")
    cost_sample: int = Field(256, ge=0, description="raw products timed per stage (0: skip)")
    cost_batch_size: int = Field(64, gt=0, description="batch size when timing the stages")
    torch_threads: int = Field(2, gt=0, description="torch threads when timing the stages")
    skip_unreadable: bool = Field(False, description="leave out store parts that cannot be read "
                                  "(counted in the report) instead of stopping")
