"""Encoder configs: one pydantic model per family, told apart by ``family``.

A config says where the weights come from (``weights``), what is fed to the model and how the
vectors are pooled, and how the encoder runs (device, precision, batch and actor pool sizes).
Fields that change the vectors (weights, pooling, token limit, text fields, input size,
normalisation) go into the encoder's fingerprint; fields that only change speed do not.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from prodcat.core.config import StrictModel


class EncoderBase(StrictModel):
    """Fields every encoder family shares."""

    weights: str = Field(description="hub repo id (e.g. FacebookAI/roberta-base, hf-hub:org/name), "
                         "local folder, s3:// URI, or shared:<path under ../shared>")
    normalize: bool = Field(True, description="L2-normalise each output vector")
    feature_prefix: str = Field("", description="prefix for this encoder's feature names, to run "
                                "two encoders of one family side by side")
    device: str = Field("auto", description="auto (cuda when visible), cpu, cuda or cuda:N")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="autocast dtype: fp16 or bf16 on a GPU; bf16 also on a CPU with "
        "bfloat16 instructions (AVX512-BF16 or AMX; about 2x the float32 speed, "
        "benchmarks/cpu_bf16.py), float32 on other CPUs. Not in the fingerprint: each vector of "
        "the offline encoders stays within a cosine of 0.994 of float32's")
    batch_size: int = Field(64, gt=0, description="products per forward pass (and Ray Data batch); "
                            "on a GPU large enough to fill it (benchmarks/embed_gpu.py measures it)")
    pool_size: int = Field(1, gt=0, description="actors this encoder's Ray Data actor pool starts "
                           "with and never goes below")
    max_pool_size: int | None = Field(None, gt=0, description="autoscale the pool up to this many "
                                      "actors while its input backs up (None: fixed at pool_size)")
    num_cpus: float = Field(1.0, ge=0, description="logical CPUs Ray reserves per actor")
    num_gpus: float | Literal["auto"] = Field(
        0.0, description="GPUs Ray reserves per actor (fractions share one); auto: this "
        "encoder's share of EmbedConfig.auto_gpus in proportion to gpu_cost, 0 on a cluster "
        "without GPUs")
    gpu_cost: float | None = Field(None, gt=0, description="GPU time per product of this "
                                   "encoder's forward (µs, measured by benchmarks/embed_gpu.py); "
                                   "sets its share under num_gpus: auto")
    num_threads: int | None = Field(None, gt=0, description="torch threads per actor; "
                                    "default max(1, round(num_cpus))")
    memory_gib: float | None = Field(None, gt=0, description="memory (GiB) Ray reserves per actor, "
                                     "so Ray does not place more actors on a node than its memory "
                                     "holds (Ray Data warns when an actor uses more than it "
                                     "asked for); null: none reserved. prodcat embed refuses to "
                                     "start when the cluster's memory cannot hold pool_size actors "
                                     "of every encoder")

    def feature_names(self) -> dict[str, str]:
        """Feature name → modality (``text`` / ``image``) of the vectors this encoder makes."""
        raise NotImplementedError

    @field_validator("num_gpus")
    @classmethod
    def _gpus_valid(cls, value):
        if value != "auto" and (value < 0 or (value > 1 and value != int(value))):
            raise ValueError("num_gpus must be auto, a fraction in [0, 1] or a whole number")
        return value

    @model_validator(mode="after")
    def _pool_and_cost(self):
        if self.max_pool_size is not None and self.max_pool_size < self.pool_size:
            raise ValueError(f"max_pool_size ({self.max_pool_size}) is below pool_size "
                             f"({self.pool_size}); set it to at least pool_size, or null for a fixed pool")
        if self.num_gpus == "auto" and self.gpu_cost is None:
            raise ValueError("num_gpus: auto needs gpu_cost (µs per product of the forward on the "
                             "target GPU; benchmarks/embed_gpu.py prints it)")
        return self

    @field_validator("weights")
    @classmethod
    def _weights_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("weights must name a hub model, a local folder, an s3:// URI or "
                             "shared:<path>")
        return value


class TextEncoderConfig(EncoderBase):
    """A Hugging Face ``AutoModel`` text encoder (RoBERTa, XLM-R, BERT, MiniLM, ...)."""

    family: Literal["text"] = "text"
    pooling: Literal["mean", "cls"] = Field("mean", description="mean over tokens or the first token")
    text_fields: Literal["combined", "separate", "title"] = Field(
        "combined", description="combined: one 'text' vector of title + description; separate: "
        "'title' and 'description' vectors; title: one 'title' vector")
    max_tokens: int = Field(128, gt=1, description="token limit per text (truncation)")

    def feature_names(self) -> dict[str, str]:
        names = {"combined": ["text"], "separate": ["title", "description"], "title": ["title"]}
        return {f"{self.feature_prefix}{n}": "text" for n in names[self.text_fields]}


class ImageEncoderConfig(EncoderBase):
    """A timm image encoder (ViT, EfficientNet, ConvNeXt, ...); pooled features, no classifier."""

    family: Literal["image"] = "image"
    image_size: int | None = Field(None, gt=0, description="square input size in px; default "
                                   "the model's pretrained input size")

    def feature_names(self) -> dict[str, str]:
        return {f"{self.feature_prefix}image": "image"}


class JointEncoderConfig(EncoderBase):
    """An OpenCLIP model: its image and text towers give 'clip_image' and 'clip_text'."""

    family: Literal["joint"] = "joint"
    architecture: str | None = Field(None, description="OpenCLIP model name (e.g. ViT-B-32) when "
                                     "weights is a bare checkpoint file; folders carry their config")
    max_tokens: int | None = Field(None, gt=1, description="text context length; default the model's")

    def feature_names(self) -> dict[str, str]:
        return {f"{self.feature_prefix}clip_image": "image", f"{self.feature_prefix}clip_text": "text"}


EncoderConfig = Annotated[Union[TextEncoderConfig, ImageEncoderConfig, JointEncoderConfig],
                          Field(discriminator="family")]
