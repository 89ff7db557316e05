"""The encoder interface every family implements, and what they share (device, autocast, text).

Letters: B batch, D embedding dimension, S image input size (px), T tokens.

An encoder reads a *batch*: a dict of equal-length columns, ``title`` and ``description``
(strings, description may be None), ``_pixels_<S>`` (``uint8 [B, S, S, 3]``) and
``_image_status`` (``"ok"`` or an :mod:`prodcat.embed.imaging` reason). It returns, per feature ``f``,
``emb_<f>`` (``float32 [B, D]``, zeros where the status is not ``ok``) and ``status_<f>``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from prodcat.core.runtime import torch_device
from prodcat.embed.encoders.fingerprint import Fingerprint

PIXELS = "_pixels_{size}"   # column of uint8 [B, S, S, 3] images decoded at input size S
IMAGE_STATUS = "_image_status"


def pixel_column(size: int) -> str:
    """Name of the decoded-image column for input size ``size``."""
    return PIXELS.format(size=size)


def combined_text(title, description) -> str:
    """The text fed to a 'combined' encoder: ``"<title>. <description>"`` (title first, so
    truncation cuts the description)."""
    title = (title or "").strip()
    description = (description or "").strip()
    if title and description:
        return f"{title}. {description}"
    return title or description


class Encoder:
    """Base class: subclasses set ``features``, ``dim``, ``image_size`` and implement ``encode``.

    Attributes:
        features: feature name → modality (``"text"`` or ``"image"``).
        dim: D, the length of each output vector.
        image_size: S when the encoder reads images, else None.
        fingerprint: architecture + weights sha256 + settings.
    """

    family = ""
    features: dict[str, str]
    dim: int
    image_size: int | None = None
    fingerprint: Fingerprint

    def __init__(self, config, cache_dir: str | Path | None = None) -> None:

        self.config = config
        self.device = torch_device(config.device)

    # -- shared helpers -------------------------------------------------------------------------
    def autocast(self):
        """fp16/bf16 autocast on a GPU when configured; a no-op (float32) on the CPU."""
        import torch

        if self.device.startswith("cuda") and self.config.precision != "fp32":
            dtype = torch.float16 if self.config.precision == "fp16" else torch.bfloat16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def finish(self, vectors) -> np.ndarray:
        """``[B, D]`` tensor → float32 numpy, L2-normalised when configured."""
        import torch

        vectors = vectors.float()
        if self.config.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    def feature_name(self, base: str) -> str:
        return f"{self.config.feature_prefix}{base}"

    def encode(self, batch: dict) -> dict[str, np.ndarray]:
        """``emb_<f>`` (float32 [B, D]) and ``status_<f>`` (object [B]) for each feature."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 ``[B, D]`` (families with a text tower)."""
        raise NotImplementedError(f"{self.family} encoders do not read text")

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [B, S, S, 3]`` → float32 ``[B, D]`` (families with an image tower)."""
        raise NotImplementedError(f"{self.family} encoders do not read images")

    # -- building blocks for encode() ----------------------------------------------------------
    def text_feature(self, name: str, texts: list, empty_status: str) -> dict[str, np.ndarray]:
        """Encode the non-empty ``texts``; empty ones get zeros and ``empty_status``."""
        texts = [t.strip() if isinstance(t, str) else "" for t in texts]
        keep = [i for i, t in enumerate(texts) if t]
        emb = np.zeros((len(texts), self.dim), dtype=np.float32)
        if keep:
            emb[keep] = self.encode_texts([texts[i] for i in keep])
        status = np.array([empty_status] * len(texts), dtype=object)
        status[keep] = "ok"
        return {f"emb_{name}": emb, f"status_{name}": status}

    def image_feature(self, name: str, batch: dict) -> dict[str, np.ndarray]:
        """Encode the images whose decode status is ``ok``; the rest keep their reason."""
        pixels = np.asarray(batch[pixel_column(self.image_size)])
        status = np.array([str(s) for s in batch[IMAGE_STATUS]], dtype=object)
        keep = np.flatnonzero(status == "ok")
        emb = np.zeros((len(status), self.dim), dtype=np.float32)
        if len(keep):
            emb[keep] = self.encode_pixels(pixels[keep])
        return {f"emb_{name}": emb, f"status_{name}": status}

    def pixels_to_tensor(self, pixels: np.ndarray, mean, std):
        """``uint8 [B, S, S, 3]`` → normalised float ``[B, 3, S, S]`` on the device."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std
