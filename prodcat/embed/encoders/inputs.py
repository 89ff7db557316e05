"""The CPU half of an encoder: raw product columns → the model's input tensors, as columns.

Letters: B batch, T tokens (the encoder's token limit), S image input size (px).

An :class:`Inputs` object is small and picklable (configs and numbers; a tokenizer is loaded
once per process, on first use, from the same weights folder as the model). The embedding
pipeline runs it in Ray Data CPU tasks, so encoder actors only copy the tensors to their device
and run the forward; the cascade's stage runner runs it in-process
(:meth:`prodcat.embed.encoders.base.Encoder.encode` = ``forward(prepare(batch))``): one code path.

Columns it writes, per feature ``f``:

- ``_in_<f>_ids`` int32 ``[B, T]`` and ``_in_<f>_mask`` int8 ``[B, T]`` (text: token ids padded
  to the token limit, 1 where a token is real); a fixed width so Ray Data blocks concatenate;
  the encoder trims each batch to its longest row;
- ``_in_<f>_pixels`` ``[B, S, S, 3]``: normalised pixels in channels-last memory order (the
  encoder views them as ``[B, 3, S, S]`` with channels-last strides, the layout convolution
  kernels run fastest in: 1.4x on EfficientNet-Lite0 on this CPU), in the transfer dtype (float32 on the CPU; float16, or bfloat16 bits stored as int16, on a GPU that computes
  in that precision: the rounding autocast would apply to the input anyway);
- ``status_<f>``: ``ok`` or the reason the row is not encoded (``no_text``, an image reason).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from prodcat.embed.encoders.config import EncoderBase, JointEncoderConfig, TextEncoderConfig
from prodcat.embed.encoders.fingerprint import resolve_weights

PIXELS = "_pixels_{size}"   # column of uint8 [B, S, S, 3] images decoded at input size S
IMAGE_STATUS = "_image_status"
PRECISIONS = ("fp32", "fp16", "bf16")


def pixel_column(size: int) -> str:
    """Name of the decoded-image column for input size ``size``."""
    return PIXELS.format(size=size)


def input_column(feature: str, part: str) -> str:
    """Name of a prepared-input column: ``part`` is ``ids``, ``mask`` or ``pixels``."""
    return f"_in_{feature}_{part}"


def combined_text(title, description) -> str:
    """The text fed to a 'combined' encoder: ``"<title>. <description>"`` (title first, so
    truncation cuts the description)."""
    title = (title or "").strip()
    description = (description or "").strip()
    if title and description:
        return f"{title}. {description}"
    return title or description


def transfer_precision(config: EncoderBase, device: str | None = None) -> str:
    """The dtype prepared pixels travel in: the encoder's ``precision`` where it computes on a
    GPU (``device`` given, or Ray reserves GPUs for its actors), else ``fp32``."""
    asks_gpu = config.num_gpus == "auto" or config.num_gpus > 0
    on_gpu = device.startswith("cuda") if device else (asks_gpu or config.device.startswith("cuda"))
    return config.precision if on_gpu else "fp32"


def clean_texts(texts) -> list[str]:
    """Stripped strings; None and non-strings become ``""`` (not encoded)."""
    return [t.strip() if isinstance(t, str) else "" for t in texts]


def token_lengths(batch: Mapping, features: list[str]) -> np.ndarray:
    """int ``[B]``: real tokens of ``features`` per row, summed (the sort key for bucketing)."""
    masks = [np.asarray(batch[input_column(f, "mask")]) for f in features]
    return np.sum([m.sum(axis=1, dtype=np.int64) for m in masks], axis=0)


class Inputs:
    """Base: ``inputs(batch)`` → input columns and ``status_<f>`` for this encoder's features.
    Subclasses set ``features`` (names) and ``image_size`` (S, or None for text)."""

    def columns(self) -> list[str]:
        """The input columns this object writes (dropped once the encoder has run)."""
        raise NotImplementedError

    def token_features(self) -> list[str]:
        """Features whose rows vary in token count (sorted by length in the pipeline)."""
        return []

    def with_precision(self, precision: str) -> "Inputs":
        """A copy whose pixels travel in ``precision`` (text inputs do not change)."""
        return self

    def __call__(self, batch: Mapping) -> dict[str, np.ndarray]:
        raise NotImplementedError


# -- text: a Hugging Face tokenizer ---------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def hf_tokenizer(weights: str, cache_dir: str | None = None):
    """``AutoTokenizer`` of the weights folder, loaded once per process (imports torch)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_weights(weights, cache_dir))


@functools.lru_cache(maxsize=8)
def _backend(serialized: str):
    from tokenizers import Tokenizer  # lazy: only text inputs tokenize

    return Tokenizer.from_str(serialized)


def configured_backend(tokenizer, width: int) -> str | None:
    """The Rust tokenizer behind a fast ``tokenizer``, with the truncation and padding to
    ``width`` that ``tokenizer(texts, truncation=True, max_length=width, padding="max_length")``
    sets, serialised (JSON); None for a slow (Python) tokenizer. CPU tasks load it with the
    ``tokenizers`` library alone: the same ids, without importing torch and transformers.

    Raises:
        ValueError: when the tokenizer has no pad token.
    """
    from tokenizers import Tokenizer  # lazy: only text inputs tokenize

    source = getattr(tokenizer, "backend_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or source is None:
        return None
    if tokenizer.pad_token is None:
        raise ValueError("the text encoder's tokenizer has no pad token; batches cannot be padded")
    try:
        backend = Tokenizer.from_str(source.to_str())
        backend.enable_truncation(max_length=width, direction=tokenizer.truncation_side)
        backend.enable_padding(length=width, direction=tokenizer.padding_side,
                               pad_id=tokenizer.pad_token_id, pad_type_id=tokenizer.pad_token_type_id,
                               pad_token=tokenizer.pad_token)
    except AttributeError:    # a transformers version without these attributes: call it instead
        return None
    return backend.to_str()


@dataclass
class TextInputs(Inputs):
    """Token ids and attention masks of a Hugging Face text encoder's features."""

    config: TextEncoderConfig
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.features = tuple(self.config.feature_names())
        self.image_size = None
        self._serialized: str | None = None       # configured_backend(), made on first use

    @property
    def tokenizer(self):
        return hf_tokenizer(self.config.weights, self.cache_dir)

    def backend(self) -> str:
        """:func:`configured_backend` of this tokenizer ("" for a slow one), made once."""
        if self._serialized is None:
            self._serialized = configured_backend(self.tokenizer, self.config.max_tokens) or ""
        return self._serialized

    def __getstate__(self) -> dict:
        self.backend()                             # ship the tokenizer itself, not its path
        return dict(self.__dict__)

    def columns(self) -> list[str]:
        return [input_column(f, p) for f in self.features for p in ("ids", "mask")]

    def token_features(self) -> list[str]:
        return list(self.features)

    def texts(self, batch: Mapping) -> dict[str, tuple[list, str]]:
        """Feature → (its texts, the status of an empty one), per ``text_fields``."""
        titles, descriptions = list(batch["title"]), list(batch["description"])
        prefix, mode = self.config.feature_prefix, self.config.text_fields
        if mode == "combined":
            return {f"{prefix}text": ([combined_text(t, d) for t, d in zip(titles, descriptions)],
                                      "no_text")}
        out = {f"{prefix}title": (titles, "no_title")}
        if mode == "separate":
            out[f"{prefix}description"] = (descriptions, "no_description")
        return out

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """int32 ids ``[B, T]`` and int8 mask ``[B, T]``, truncated and padded to ``max_tokens``."""
        width = self.config.max_tokens
        if not texts:
            return np.zeros((0, width), np.int32), np.zeros((0, width), np.int8)
        if self.backend():
            encodings = _backend(self.backend()).encode_batch(list(texts))
            return (np.array([e.ids for e in encodings], np.int32),
                    np.array([e.attention_mask for e in encodings], np.int8))
        enc = self.tokenizer(list(texts), truncation=True, max_length=width, padding="max_length",
                             return_tensors="np")
        return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int8)

    def __call__(self, batch: Mapping) -> dict[str, np.ndarray]:
        out = {}
        for feature, (texts, empty_status) in self.texts(batch).items():
            texts = clean_texts(texts)
            keep = [i for i, t in enumerate(texts) if t]
            ids = np.zeros((len(texts), self.config.max_tokens), np.int32)
            mask = np.zeros_like(ids, dtype=np.int8)
            ids[keep], mask[keep] = self.tokenize([texts[i] for i in keep])
            status = np.array([empty_status] * len(texts), dtype=object)
            status[keep] = "ok"
            out.update({input_column(feature, "ids"): ids, input_column(feature, "mask"): mask,
                        f"status_{feature}": status})
        return out


# -- images: normalised pixels in the encoder's layout ------------------------------------------
def normalize_pixels(pixels: np.ndarray, mean, std) -> np.ndarray:
    """``uint8 [B, S, S, 3]`` → float32 ``[B, S, S, 3]``: ``(x / 255 - mean) / std`` per channel,
    the same float32 operations (so the same bits) as torch's."""
    x = np.asarray(pixels).astype(np.float32)
    x /= np.float32(255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return x


def to_transfer_dtype(x: np.ndarray, precision: str) -> np.ndarray:
    """float32 → the transfer dtype: float32, float16, or bfloat16 bits as int16 (numpy has no
    bfloat16; :func:`prodcat.embed.encoders.base.Encoder.to_device` views them back)."""
    if precision == "fp32":
        return x
    if precision == "fp16":
        return x.astype(np.float16)
    import torch  # lazy: only GPU (bf16) inputs need torch's round-to-nearest-even conversion

    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy()


@dataclass
class ImageInputs(Inputs):
    """Normalised pixels of one image feature (``mean``/``std`` per channel, in [0, 1] units)."""

    feature: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: one of {PRECISIONS}")
        self.features = (self.feature,)

    def columns(self) -> list[str]:
        return [input_column(self.feature, "pixels")]

    def with_precision(self, precision: str) -> "ImageInputs":
        return replace(self, precision=precision)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [B, S, S, 3]`` → normalised ``[B, S, S, 3]`` in the transfer dtype."""
        return to_transfer_dtype(normalize_pixels(pixels, self.mean, self.std), self.precision)

    def __call__(self, batch: Mapping) -> dict[str, np.ndarray]:
        column = pixel_column(self.image_size)
        if column not in batch:
            raise KeyError(f"{column} missing: decode the images at {self.image_size} px first "
                           "(prodcat.embed.extractor.decode_images)")
        status = np.array([str(s) for s in batch[IMAGE_STATUS]], dtype=object)
        return {input_column(self.feature, "pixels"): self.normalize(batch[column]),
                f"status_{self.feature}": status}


# -- joint: OpenCLIP tokens + pixels --------------------------------------------------------------
def clip_model_name(config: JointEncoderConfig, path) -> tuple[str, str | None]:
    """``(OpenCLIP model name, pretrained file or None)`` for resolved weights ``path``.

    Raises:
        ValueError: a bare checkpoint file without ``architecture``.
    """
    if path.is_dir():
        return f"local-dir:{path}", None
    if config.architecture:
        return config.architecture, str(path)
    raise ValueError(f"{config.weights} is a single checkpoint file: set architecture "
                     "to its OpenCLIP model name (e.g. ViT-B-32)")


def clip_tokenizer(config: JointEncoderConfig, cache_dir: str | None = None):
    """OpenCLIP's tokenizer for ``config``, loaded once per process."""
    return _clip_tokenizer(config.weights, config.architecture, config.max_tokens, cache_dir)


@functools.lru_cache(maxsize=8)
def _clip_tokenizer(weights: str, architecture: str | None, context_length: int | None,
                    cache_dir: str | None):
    import open_clip  # lazy: only joint encoders need open_clip

    config = JointEncoderConfig(weights=weights, architecture=architecture, max_tokens=context_length)
    name, _ = clip_model_name(config, resolve_weights(weights, cache_dir))
    return open_clip.get_tokenizer(name, context_length=context_length)


@dataclass
class JointInputs(Inputs):
    """OpenCLIP's token ids (the full context: CLIP's text tower takes no shorter input) for
    ``clip_text`` and normalised pixels for ``clip_image``."""

    config: JointEncoderConfig
    image: ImageInputs
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.features = tuple(self.config.feature_names())
        self.text_feature = f"{self.config.feature_prefix}clip_text"
        self.image_size = self.image.image_size

    def columns(self) -> list[str]:
        return [input_column(self.text_feature, "ids"), *self.image.columns()]

    def with_precision(self, precision: str) -> "JointInputs":
        return replace(self, image=self.image.with_precision(precision))

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """int32 ``[B, T]`` (T = the model's context length)."""
        tokens = clip_tokenizer(self.config, self.cache_dir)(list(texts))
        return np.asarray(tokens, dtype=np.int32)

    def __call__(self, batch: Mapping) -> dict[str, np.ndarray]:
        texts = clean_texts(combined_text(t, d) for t, d in zip(batch["title"], batch["description"]))
        keep = [i for i, t in enumerate(texts) if t]
        tokens = self.tokenize([texts[i] for i in keep] or ["x"])
        ids = np.zeros((len(texts), tokens.shape[1]), np.int32)
        ids[keep] = tokens[:len(keep)]
        status = np.array(["no_text"] * len(texts), dtype=object)
        status[keep] = "ok"
        out = self.image(batch)
        out.update({input_column(self.text_feature, "ids"): ids, f"status_{self.text_feature}": status})
        return out
