"""The per-batch embedding code: encoders applied to a batch of products.

:class:`FeatureExtractor` is the same object in the Ray Data actors of ``prodcat embed`` (which
get inputs already prepared by CPU tasks, and only run the forward) and in the cascade's stage
runner (Serve replicas, bulk scoring: raw products, prepared in-process): one code path for
offline and online features. Letters: B batch, D_f dimension of feature f, S image input size (px).
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from prodcat.embed.encoders import build_encoder
from prodcat.embed.encoders.config import EncoderConfig
from prodcat.embed.encoders.inputs import IMAGE_STATUS, pixel_column
from prodcat.embed.imaging import ImageLimits, decode_batch
from prodcat.embed.store import StoreMismatch


# -- the per-batch code: Ray Data actors and Serve replicas ---------------------------------------
class FeatureExtractor:
    """Encoders applied to a batch of products.

    ``FeatureExtractor(encoders)(batch)``: ``batch`` holds equal-length columns ``product_id``
    and either raw inputs: ``title``, ``description`` and ``image_uri`` (path / ``s3://`` /
    None), ``image_bytes`` (encoded bytes / None) or already decoded ``_pixels_<S>`` (``uint8
    [B, S, S, 3]``) with ``_image_status``; or, per encoder, its prepared input columns (from
    ``encoder.inputs`` in a CPU stage, see :mod:`prodcat.embed.encoders.inputs`), which it then
    only copies to its device. Returns ``product_id`` plus per feature ``emb_<f>`` (float32
    ``[B, D_f]``, zeros where ``status_<f>`` is not ``ok``) and ``status_<f>``.

    Args:
        encoders: encoder name → config.
        expected: encoder name → fingerprint key the caller expects.
        keep_inputs: also return the other columns of the batch (less the consumed input
            columns) and ``_seconds_<encoder>`` (pipeline use).
        num_threads: ``torch.set_num_threads`` for this process (actors), None leaves it.

    Raises:
        StoreMismatch: when a loaded encoder's fingerprint differs from ``expected``.
    """

    def __init__(self, encoders: Mapping[str, EncoderConfig], image_limits: ImageLimits | None = None,
                 cache_dir: str | None = None, expected: Mapping[str, str] | None = None,
                 keep_inputs: bool = False, num_threads: int | None = None) -> None:
        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        self.image_limits = image_limits or ImageLimits()
        self.encoders = {name: build_encoder(cfg, cache_dir) for name, cfg in encoders.items()}
        for name, key in (expected or {}).items():
            found = self.encoders[name].fingerprint.key
            if found != key:
                raise StoreMismatch(
                    f"encoder {name!r} loaded weights {cfg_weights(encoders[name])} with fingerprint "
                    f"{found}, expected {key}: these are not the weights its vectors were made with "
                    "(the store's, or the checkpoint's at training). Point weights at the encoder "
                    "version the vectors came from (a cascade exported with --include-weights "
                    "carries it), or embed and train again with these weights")
        self.keep_inputs = keep_inputs

    @property
    def image_sizes(self) -> list[int]:
        """Input sizes S of the encoders that read images."""
        return sorted({e.image_size for e in self.encoders.values() if e.image_size})

    def describe(self) -> dict[str, dict]:
        """Feature name → ``{encoder, family, modality, dim, fingerprint, config}`` (manifest)."""
        out = {}
        for name, enc in self.encoders.items():
            for feature, modality in enc.features.items():
                out[feature] = {"encoder": name, "family": enc.family, "modality": modality,
                                "dim": enc.dim, "image_size": enc.image_size,
                                "fingerprint": enc.fingerprint.to_dict(),
                                "config": enc.config.model_dump(mode="json")}
        return out

    def __call__(self, batch: Mapping) -> dict:
        batch = dict(batch)
        n = len(batch["product_id"])
        raw = {name for name, enc in self.encoders.items()
               if not all(c in batch for c in enc.inputs.columns())}
        missing = sorted({self.encoders[name].image_size for name in raw} - {None}
                         - {s for s in self.image_sizes if pixel_column(s) in batch})
        if missing:
            batch.update(decode_images(batch, missing, self.image_limits))
        out = dict(batch) if self.keep_inputs else {"product_id": batch["product_id"]}
        for name, enc in self.encoders.items():
            start = time.perf_counter()
            out.update(enc.encode(batch) if name in raw else enc.forward(batch))
            if self.keep_inputs:
                out[f"_seconds_{name}"] = np.full(n, (time.perf_counter() - start) / max(n, 1))
            for column in enc.inputs.columns():
                out.pop(column, None)
        return out


def cfg_weights(config: EncoderConfig) -> str:
    """The weights reference of an encoder config, quoted for messages."""
    return repr(getattr(config, "weights", "?"))


def decode_images(batch: Mapping, sizes: list[int], limits: ImageLimits | None = None) -> dict:
    """``_pixels_<S>`` (``uint8 [B, S, S, 3]``) for each S and ``_image_status`` from the batch's
    ``image_bytes`` or ``image_uri`` column; a bad image gets its reason, never an exception."""
    sources = batch.get("image_bytes", batch.get("image_uri"))
    if sources is None:
        sources = [None] * len(batch["product_id"])
    pixels, statuses = decode_batch(list(sources), sizes, limits)
    out = {pixel_column(s): arr for s, arr in pixels.items()}
    out[IMAGE_STATUS] = np.array(statuses, dtype=object)
    return out
