"""``TrainConfig``: everything a training run needs, one typed source of truth.

``model`` (:class:`prodcat.models.config.ModelConfig`), ``data`` (product table, store, splits,
platforms), ``optim`` (AdamW, epochs, early stopping), ``scaling`` (Ray Train workers, GPUs),
``output`` and ``name`` (the same output + name resumes). A Tune search space or ``--set``
overrides fields by dotted name (:func:`apply_overrides`). Importing this module loads no torch.

The model comes from a named preset (:mod:`prodcat.models.preset`): ``model: {preset: default}``
in YAML, fields beside it override the preset's; ``TrainConfig()`` is the default model.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from prodcat.core.config import StrictModel, flatten_dotted, load_config, set_dotted
from prodcat.models.config import ModelConfig
from prodcat.models.lexical import LexicalConfig
from prodcat.models.preset import apply_preset


class DataSettings(StrictModel):
    """Where the training data comes from and which rows and features are used."""

    products: str = Field("runs/sample/catalog/products.parquet", description="product table (Parquet)")
    taxonomy: str | None = Field(None, description="taxonomy.json; default: beside the product table")
    embeddings: str = Field("runs/sample/embeddings", description="embedding store folder")
    platforms: list[str] | None = Field(None, description="train/validate on these platforms; None: all")
    train_split: str = Field("train", description="split name of the training rows")
    val_split: str = Field("val", description="split name of the validation rows (early stopping)")
    calib_split: str = Field("calib", description="split the softmax temperature is fitted on "
                             "(never seen by early stopping)")
    max_train_products: int | None = Field(None, ge=1,
                                           description="random subsample of training rows (seeded)")
    skip_unreadable: bool = Field(False, description="leave out embedding store parts that cannot "
                                  "be read (counted in train_result.json) instead of stopping")
    variants: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="decision-level fusion: {feature: {platform Q: store}}: "
        "a store holding the feature from an encoder fine-tuned without Q (prodcat finetune with "
        "data.platforms = the others, then prodcat embed), which Q's cross-platform held-out set "
        "reads, so a fine-tuned component is chosen on a platform its encoder never saw; {}: every "
        "set reads data.embeddings")


class OptimSettings(StrictModel):
    """Optimisation and stopping."""

    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    batch_size: int = Field(256, ge=1, description="per-worker batch size (products)")
    epochs: int = Field(20, ge=1, description="maximum number of epochs")
    patience: int = Field(3, ge=1, description="stop after this many epochs without a better val_hF")
    seed: int = Field(0, description="seeds model init, shuffling and dropout (per epoch)")
    shuffle_buffer: int = Field(20_000, ge=0, description="Ray Data local shuffle buffer (rows); 0: off")


class ScalingSettings(StrictModel):
    """Ray Train workers."""

    num_workers: int = Field(1, ge=0, description="training workers; 0: Ray Train local mode "
                             "(in the driver process, no fault tolerance)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPUs reserved per worker (fractions ok)")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last checkpoint")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per worker")


class TrainConfig(StrictModel):
    """Everything a training run needs; Tune and ``--set`` override fields by dotted name."""

    model: ModelConfig = Field(description="classifier (prodcat.models): a preset "
                               "({preset: default}, the default when omitted) and fields over it")
    data: DataSettings = Field(default_factory=DataSettings)
    optim: OptimSettings = Field(default_factory=OptimSettings)
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    lexical: LexicalConfig = Field(default_factory=LexicalConfig,
                                   description="the lexical feature's TF-IDF + linear model (when "
                                   "model.modalities holds 'lexical')")
    output: str = Field("runs/train", description="run folder, local or s3://")
    name: str = Field("train", description="Ray Train run name; same output + name resumes")
    keep_checkpoints: int = Field(2, ge=1, description="epoch checkpoints kept (best by val_hF)")
    threshold: float = Field(0.5, ge=0, le=1,
                             description="cascade threshold written to calibration.json")
    inject_failure_at_epoch: int | None = Field(
        None, ge=0, description="fault drill: raise once, after checkpointing this epoch")

    @model_validator(mode="before")
    @classmethod
    def _model_preset(cls, data: Any) -> Any:
        return apply_preset(data)

    @model_validator(mode="after")
    def _lexical_grid(self) -> "TrainConfig":
        for overrides in self.model.decision.lexical_grid:      # each must make a valid LexicalConfig
            try:
                LexicalConfig.model_validate({**self.lexical.model_dump(), **overrides})
            except ValueError as err:
                raise ValueError(f"model.decision.lexical_grid entry {overrides}: {err}") from None
        return self


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted-name overrides (``{"model.fusion": "late"}``), validated.

    Raises:
        prodcat.core.config.ConfigError: on an unknown field or a bad value.
    """

    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return load_config(TrainConfig, None, flatten_dotted(data))


def run_prefix(config: TrainConfig) -> str:
    """``[train]``, or ``[train <name>]`` for a named run (e.g. the main job's ``text``)."""
    return "[train]" if config.name == "train" else f"[train {config.name}]"
