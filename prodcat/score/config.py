"""Typed config of ``prodcat score`` (:class:`ScoreConfig`): bulk scoring as a Ray Data job."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prodcat.core.config import StrictModel
from prodcat.embed.imaging import ImageLimits

Mode = Literal["cascade", "text", "multimodal"]


class ScoreConfig(StrictModel):
    """``prodcat score``: what to score, with which cascade, and how the Ray Data job runs."""

    model: str | None = Field(None, description="cascade.json or a folder holding it")
    text_model: str | None = Field(None, description="stage-1 checkpoint (overrides the cascade's)")
    multimodal_model: str | None = Field(None, description="stage-2 checkpoint (overrides the cascade's)")
    threshold: float | None = Field(None, ge=0, description="tau (overrides the cascade's)")
    abstain_target: float | None = Field(
        None, ge=0, le=1, description="partial paths: stop each answer at the deepest level whose "
        "calibrated confidence reaches the thresholds fitted for this target precision per level "
        "on the calibration split (prodcat.cascade.abstain); None: full paths")
    input: str | None = Field(None, description="Parquet file/folder, CSV or JSON Lines (gzip ok), "
                              "local or s3://; with `adapters` and no input: each adapter's export")
    adapters: list[str] = Field([], description="read through these adapters (built-in platform "
                                "names or AdapterConfig YAML); empty: product-table columns")
    features_from: str | None = Field(None, description="embedding store whose vectors are reused "
                                      "where the fingerprints match (rows it lacks are encoded)")
    output: str = Field(description="predictions folder (Parquet parts), local or s3://")
    mode: Mode = Field("cascade", description="cascade, text (stage 1 only) or multimodal (stage 2 only)")
    limit: int | None = Field(None, gt=0, description="score only the first N input rows")
    text_batch_size: int = Field(256, gt=0, description="rows per stage-1 batch")
    multimodal_batch_size: int = Field(64, gt=0, description="rows per stage-2 batch")
    text_pool_size: int = Field(1, gt=0, description="stage-1 actors")
    multimodal_pool_size: int = Field(1, gt=0, description="stage-2 actors")
    text_num_cpus: float = Field(1.0, ge=0, description="CPUs per stage-1 actor")
    multimodal_num_cpus: float = Field(1.0, ge=0, description="CPUs per stage-2 actor")
    multimodal_num_gpus: float = Field(0.0, ge=0, description="GPUs per stage-2 actor")
    torch_threads: int | None = Field(None, gt=0, description="torch threads per actor "
                                      "(default: its CPUs, at least 1)")
    device: str = Field("auto", description="auto, cpu or cuda")
    rows_per_file: int = Field(8192, gt=0, description="rows per output part (at most)")
    block_rows: int = Field(2048, gt=0, description="rows per Ray Data input block")
    image_limits: ImageLimits = Field(default_factory=ImageLimits)
    title_max_chars: int = Field(256, gt=0, description="cap on the cleaned title")
    description_max_chars: int = Field(2000, gt=0, description="cap on the cleaned description")
    skip_unreadable: bool = Field(False, description="leave out parts of the `features_from` store "
                                  "that cannot be read (their rows are encoded; counted in "
                                  "_summary.json) instead of stopping")
