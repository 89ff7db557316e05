"""The encoder interface every family implements, and what they share (device, autocast).

Letters: B batch, D embedding dimension, S image input size (px), T tokens.

An encoder has two halves. ``prepare(batch)`` (CPU, :mod:`prodcat.embed.encoders.inputs`) turns
raw product columns, ``title`` and ``description`` (strings, description may be None),
``_pixels_<S>`` (``uint8 [B, S, S, 3]``) and ``_image_status`` (``"ok"`` or an
:mod:`prodcat.embed.imaging` reason), into model-input columns (token ids and masks, normalised
pixels) and ``status_<f>``. ``forward(inputs)`` (the encoder's device) copies them there and
runs the model: per feature ``f``, ``emb_<f>`` (``float32 [B, D]``, zeros where the status is
not ``ok``) and ``status_<f>``. ``encode(batch)`` is ``forward(prepare(batch))``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from prodcat.core.runtime import autocast, torch_device
from prodcat.embed.encoders.fingerprint import Fingerprint
from prodcat.embed.encoders.inputs import (  # noqa: F401  (re-exported names)
    IMAGE_STATUS,
    PIXELS,
    Inputs,
    combined_text,
    input_column,
    pixel_column,
)


class Encoder:
    """Base class: subclasses set ``features``, ``dim``, ``image_size``, ``inputs`` and implement
    ``forward``.

    Attributes:
        features: feature name → modality (``"text"`` or ``"image"``).
        dim: D, the length of each output vector.
        image_size: S when the encoder reads images, else None.
        fingerprint: architecture + weights sha256 + settings.
        inputs: the CPU half (:class:`prodcat.embed.encoders.inputs.Inputs`), picklable.
    """

    family = ""
    features: dict[str, str]
    dim: int
    image_size: int | None = None
    fingerprint: Fingerprint
    inputs: Inputs

    def __init__(self, config, cache_dir: str | Path | None = None) -> None:

        self.config = config
        self.device = torch_device(config.device)

    # -- the two halves ------------------------------------------------------------------------
    def prepare(self, batch: Mapping) -> dict[str, np.ndarray]:
        """Raw product columns → input columns and ``status_<f>`` (CPU work)."""
        return self.inputs(batch)

    def forward(self, inputs: Mapping) -> dict[str, np.ndarray]:
        """Input columns → ``emb_<f>`` (float32 [B, D]) and ``status_<f>`` (object [B])."""
        raise NotImplementedError

    def encode(self, batch: Mapping) -> dict[str, np.ndarray]:
        """Raw product columns → ``emb_<f>`` and ``status_<f>``: ``forward(prepare(batch))``."""
        return self.forward(self.prepare(batch))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 ``[B, D]`` (families with a text tower)."""
        raise NotImplementedError(f"{self.family} encoders do not read text")

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [B, S, S, 3]`` → float32 ``[B, D]`` (families with an image tower)."""
        raise NotImplementedError(f"{self.family} encoders do not read images")

    # -- shared helpers -------------------------------------------------------------------------
    def autocast(self):
        """The autocast context of ``config.precision`` on this encoder's device: fp16/bf16 on a
        GPU, bf16 on a CPU with bf16 instructions, else float32
        (:func:`prodcat.core.runtime.autocast`)."""
        return autocast(self.device, self.config.precision)

    def to_device(self, array: np.ndarray):
        """A numpy array → a tensor on the device: through pinned memory with a non-blocking
        copy on a GPU; on the CPU the array itself (no copy when contiguous)."""
        import torch

        with warnings.catch_warnings():   # Ray Data hands read-only arrays; they are only read
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.startswith("cuda"):
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def pixels_to_device(self, pixels: np.ndarray):
        """Prepared pixels ``[B, S, S, 3]`` (float32, float16 or bfloat16 bits as int16) → ``[B,
        3, S, S]`` on the device with channels-last strides (a view, no copy); float32 on the
        CPU (where autocast lowers the convolutions to bf16 when the CPU computes it)."""
        import torch

        x = self.to_device(pixels)                                     # [B, S, S, 3]
        if x.dtype == torch.int16:
            x = x.view(torch.bfloat16)
        if not self.device.startswith("cuda"):
            x = x.float()
        return x.permute(0, 3, 1, 2)                                   # [B, 3, S, S]

    def chunks(self, n: int):
        """Row slices of at most ``batch_size`` rows covering ``range(n)``."""
        size = self.config.batch_size
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def finish(self, vectors) -> np.ndarray:
        """``[B, D]`` tensor → float32 numpy, L2-normalised when configured."""
        import torch

        vectors = vectors.float()
        if self.config.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    def feature_name(self, base: str) -> str:
        return f"{self.config.feature_prefix}{base}"

    def masked(self, feature: str, inputs: Mapping, run) -> dict[str, np.ndarray]:
        """``emb_<f>``/``status_<f>`` of ``feature``: ``run(rows)`` → float32 ``[len(rows), D]``
        encodes the rows whose status is ``ok``; the rest get zeros and keep their reason."""
        status = np.array([str(s) for s in inputs[f"status_{feature}"]], dtype=object)
        keep = np.flatnonzero(status == "ok")
        emb = np.zeros((len(status), self.dim), dtype=np.float32)
        rows = slice(None) if len(keep) == len(status) else keep   # a view when all rows are ok
        if len(keep):
            emb[rows] = run(rows)
        return {f"emb_{feature}": emb, f"status_{feature}": status}
