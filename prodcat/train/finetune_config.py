"""``FinetuneConfig``: fine-tuning a text encoder end to end (``prodcat finetune``), one typed
source of truth.

``encoder`` (the base text encoder: weights, pooling, normalisation, token limit, as
:class:`prodcat.embed.encoders.TextEncoderConfig`), ``data`` (product table, platforms, split,
subsample), ``optim`` (AdamW, warm-up, epochs, seed), ``scaling`` (Ray Train workers, GPUs,
failures), ``output`` and ``name`` (the same output + name resumes). ``--set`` overrides fields by
dotted name. Importing this module loads no torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from prodcat.core.config import StrictModel
from prodcat.embed.encoders.config import TextEncoderConfig


class FinetuneData(StrictModel):
    """Which products train the encoder."""

    products: str = Field("runs/sample/catalog/products.parquet", description="product table (Parquet)")
    platforms: list[str] | None = Field(None, description="train on these platforms only (a "
                                        "leave-one-platform-out fold passes its training "
                                        "platforms); None: all")
    train_split: str = Field("train", description="split name of the training rows")
    only_products: str | None = Field(None, description="Parquet file (local or s3://) with a "
                                      "product_id column: train only on these products, of the "
                                      "split and platforms chosen, e.g. another fine-tuning's "
                                      "encoder/trained_on.parquet less a platform (the main job's "
                                      "nested encoders); None: every product")
    max_train_products: int | None = Field(None, ge=1, description="random subsample of the "
                                           "training rows (seeded by sample_seed)")
    sample_seed: int = Field(0, description="seed of the max_train_products subsample")
    min_products_per_label: int = Field(1, ge=1, description="leave out labels with fewer "
                                        "training products than this (after the subsample)")


class FinetuneOptim(StrictModel):
    """AdamW with a linear warm-up then linear decay to 0, cross-entropy over the label leaves."""

    lr: float = Field(3e-5, gt=0, description="peak learning rate of the encoder's weights")
    head_lr: float = Field(2e-3, gt=0, description="peak learning rate of the linear head (it "
                           "starts from zero and reads L2-normalised vectors: it needs more)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and "
                                "LayerNorm weights)")
    warmup: float = Field(0.1, ge=0, lt=1, description="share of all steps spent warming up "
                          "linearly from 0 to the peak rates")
    epochs: int = Field(2, ge=1, description="passes over the training rows")
    batch_size: int = Field(32, ge=1, description="products per step per worker (the global "
                            "batch is batch_size x num_workers)")
    bucket_window: int = Field(16, ge=1, description="sort rows by token count within windows of "
                               "this many batches, then shuffle the batches: less padding (about "
                               "a fifth of the compute at 64 tokens on the sample); 1: random batches")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm (None: off)")
    seed: int = Field(0, description="seeds the head, shuffling and dropout (per epoch, so a "
                      "resumed run continues exactly as an uninterrupted one)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="autocast dtype of the forward and backward: bf16 on recent GPUs and "
        "on CPUs with bfloat16 instructions (AVX512-BF16 or AMX; a step about 1.6x the float32 "
        "speed on one thread here, benchmarks/cpu_bf16.py), float32 on other CPUs; weights and optimizer state "
        "stay fp32")
    log_every_s: float = Field(30.0, gt=0, description="seconds between progress lines within "
                               "an epoch")


class FinetuneScaling(StrictModel):
    """Ray Train workers (data parallel: DDP over gloo on CPUs, NCCL on GPUs)."""

    num_workers: int = Field(1, ge=1, description="training workers (data-parallel)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker (fractions ok)")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last epoch "
                              "checkpoint (-1: unlimited)")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per worker "
                                      "(default: round(cpus_per_worker), at least 1)")


#: the base encoder when the config names none: the offline text encoder (configs/encoders.offline.yaml)
DEFAULT_ENCODER = {"family": "text", "weights": "shared:models/all-MiniLM-L6-v2", "max_tokens": 64}


class FinetuneConfig(StrictModel):
    """Everything a fine-tuning run needs; ``--set`` overrides fields by dotted name."""

    encoder: TextEncoderConfig = Field(
        default_factory=lambda: TextEncoderConfig(**DEFAULT_ENCODER),
        description="the base text encoder (weights: hub id, local folder, s3:// or shared:), "
        "with the text, pooling, normalisation and token limit the fine-tuned encoder keeps")
    data: FinetuneData = Field(default_factory=FinetuneData)
    optim: FinetuneOptim = Field(default_factory=FinetuneOptim)
    scaling: FinetuneScaling = Field(default_factory=FinetuneScaling)
    output: str = Field("runs/finetune", description="run folder, local or s3:// (the encoder "
                        "goes to <output>/encoder)")
    name: str = Field("finetune", description="Ray Train run name; the same output + name resumes")
    encoder_name: str = Field("text_ft", description="encoder name in the config snippet "
                              "(<output>/encoder.yaml) and in stores it is embedded into")
    feature_prefix: str = Field("ft_", description="feature_prefix of the fine-tuned encoder, so "
                                "its feature (ft_text) sits beside the frozen one (text)")
    keep_checkpoints: int = Field(2, ge=1, description="epoch checkpoints kept (the latest ones)")
    logit_scale: float = Field(20.0, gt=0, description="the head reads logit_scale x the "
                               "L2-normalised vector (a cosine classifier's temperature: unit "
                               "vectors under a zero-initialised head otherwise give near-uniform "
                               "softmaxes for hundreds of steps); 1 when encoder.normalize is false")

    @model_validator(mode="before")
    @classmethod
    def _encoder_defaults(cls, data):
        """``--set encoder.max_tokens=32`` alone keeps the default weights (and vice versa)."""
        if isinstance(data, dict) and isinstance(data.get("encoder"), dict):
            data = {**data, "encoder": {**DEFAULT_ENCODER, **data["encoder"]}}
        return data

    @field_validator("encoder")
    @classmethod
    def _one_text(cls, value: TextEncoderConfig) -> TextEncoderConfig:
        if value.text_fields == "separate":
            raise ValueError("encoder.text_fields=separate makes two features; fine-tuning trains "
                             "one vector per product: use combined (title + description) or title")
        return value

    @model_validator(mode="after")
    def _prefix_differs(self) -> "FinetuneConfig":
        if self.feature_prefix == self.encoder.feature_prefix:
            raise ValueError(f"feature_prefix {self.feature_prefix!r} equals the base encoder's: "
                             "the fine-tuned feature would collide with the frozen one in a store; "
                             "choose another (default ft_)")
        return self
