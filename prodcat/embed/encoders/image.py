"""Image encoders from timm (ViT, EfficientNet, ConvNeXt, ...): pooled features, no classifier.
Letters: B batch, S input size (px), D pooled feature size."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from prodcat.embed.encoders.base import Encoder
from prodcat.embed.encoders.config import ImageEncoderConfig
from prodcat.embed.encoders.fingerprint import Fingerprint, resolve_weights, weights_sha256
from prodcat.embed.encoders.inputs import ImageInputs, input_column, transfer_precision


class ImageEncoder(Encoder):
    """A timm model loaded from a folder in timm's layout (``config.json`` + weights).

    The input size is ``config.image_size`` or the model's pretrained ``input_size``. Models with
    a fixed input size (ViT) are built for the requested size; timm resamples their position
    embeddings when it loads the weights. Feature ``image``: ``[B, D]``. Normalising the pixels
    is the CPU half (:class:`prodcat.embed.encoders.inputs.ImageInputs`).

    Raises:
        FileNotFoundError: weights or ``config.json`` missing.
    """

    family = "image"

    def __init__(self, config: ImageEncoderConfig, cache_dir: str | Path | None = None) -> None:
        import timm

        super().__init__(config, cache_dir)
        path = resolve_weights(config.weights, cache_dir)
        saved = _read_timm_config(path)
        architecture = saved["architecture"]
        kwargs = {}
        fixed = saved.get("pretrained_cfg", saved).get("fixed_input_size", False)
        if config.image_size and fixed:
            kwargs["img_size"] = config.image_size
        self.model = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0,
                                       **kwargs).to(self.device).eval()
        data_cfg = timm.data.resolve_data_config({}, model=self.model)
        self.image_size = int(config.image_size or data_cfg["input_size"][-1])
        self.mean, self.std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
        self.interpolation = data_cfg.get("interpolation", "bicubic")
        self.dim = int(self.model.num_features)
        self.features = config.feature_names()
        self.inputs = ImageInputs(self.feature_name("image"), self.image_size, self.mean, self.std,
                                  transfer_precision(config, self.device))
        self.fingerprint = Fingerprint(
            architecture=f"timm:{architecture}", weights_sha256=weights_sha256(path),
            settings={"image_size": self.image_size, "normalize": config.normalize,
                      "mean": list(self.mean), "std": list(self.std)})

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [B, S, S, 3]`` → float32 ``[B, D]``."""
        return self.forward_pixels(self.inputs.normalize(pixels))

    def forward_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Prepared pixels ``[B, S, S, 3]`` (channels-last) → float32 ``[B, D]``, ``batch_size`` rows at a time."""
        import torch

        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        for part in self.chunks(len(pixels)):
            x = self.pixels_to_device(pixels[part])                  # [B, 3, S, S], channels-last
            with torch.inference_mode(), self.autocast():
                out[part] = self.finish(self.model(x))                # [B, D]
        return out

    def forward(self, inputs: Mapping) -> dict[str, np.ndarray]:
        feature = self.feature_name("image")
        pixels = np.asarray(inputs[input_column(feature, "pixels")])
        return self.masked(feature, inputs, lambda rows: self.forward_pixels(pixels[rows]))


def _read_timm_config(path: Path) -> dict:
    """``<path>/config.json`` as timm's ``save_for_hf`` writes it.

    Raises:
        FileNotFoundError: when the folder has no ``config.json`` (timm's layout needs one).
    """
    import json

    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} is not a timm model folder: no config.json "
                                "(save with timm.models.save_for_hf or push_to_hf_hub)")
    return json.loads(cfg_file.read_text())
