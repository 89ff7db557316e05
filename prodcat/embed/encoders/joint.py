"""Joint encoders: the image and text towers of one OpenCLIP model.
Letters: B batch, S input size (px), T context length, D joint embedding size."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from prodcat.embed.encoders.base import Encoder
from prodcat.embed.encoders.config import JointEncoderConfig
from prodcat.embed.encoders.fingerprint import Fingerprint, resolve_weights, weights_sha256
from prodcat.embed.encoders.inputs import (
    ImageInputs,
    JointInputs,
    clip_model_name,
    input_column,
    transfer_precision,
)


class JointEncoder(Encoder):
    """OpenCLIP from a folder in its hub layout (``open_clip_config.json`` + weights), or from a
    bare checkpoint file with ``architecture`` naming a built-in OpenCLIP model.

    Features: ``clip_image`` and ``clip_text`` (title + description), both ``[B, D]`` in one space.
    Tokenizing and normalising the pixels is the CPU half
    (:class:`prodcat.embed.encoders.inputs.JointInputs`). CLIP's text tower reads the full
    context (its position embedding has a fixed length), so its tokens are not trimmed.

    Raises:
        FileNotFoundError: weights or config missing. ValueError: a bare file without
            ``architecture``.
    """

    family = "joint"

    def __init__(self, config: JointEncoderConfig, cache_dir: str | Path | None = None) -> None:
        import open_clip

        super().__init__(config, cache_dir)
        path = resolve_weights(config.weights, cache_dir)
        name, pretrained = clip_model_name(config, path)
        architecture = _clip_architecture(path) if path.is_dir() else config.architecture
        self.model = open_clip.create_model(name, pretrained=pretrained,
                                            device=self.device).eval()
        visual = self.model.visual
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        pre = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = tuple(pre.get("mean") or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(pre.get("std") or open_clip.OPENAI_DATASET_STD)
        self.features = config.feature_names()
        image = ImageInputs(self.feature_name("clip_image"), self.image_size, self.mean, self.std,
                            transfer_precision(config, self.device))
        self.inputs = JointInputs(config, image, None if cache_dir is None else str(cache_dir))
        self.dim = int(getattr(visual, "output_dim", 0) or self._probe_dim())
        self.fingerprint = Fingerprint(
            architecture=f"open_clip:{architecture}", weights_sha256=weights_sha256(path),
            settings={"image_size": self.image_size, "context_length": config.max_tokens,
                      "normalize": config.normalize, "mean": list(self.mean),
                      "std": list(self.std)})

    def _probe_dim(self) -> int:
        import torch

        with torch.inference_mode():
            tokens = self.to_device(self.inputs.tokenize(["x"])).long()
            return int(self.model.encode_text(tokens).shape[-1])

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 ``[B, D]`` (truncated to the context length)."""
        return self.forward_tokens(self.inputs.tokenize(list(texts)))

    def forward_tokens(self, ids: np.ndarray) -> np.ndarray:
        """int token ids ``[B, T]`` → float32 ``[B, D]``, ``batch_size`` rows at a time."""
        import torch

        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for part in self.chunks(len(ids)):
            tokens = self.to_device(ids[part]).long()                  # [B, T]
            with torch.inference_mode(), self.autocast():
                out[part] = self.finish(self.model.encode_text(tokens))  # [B, D]
        return out

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [B, S, S, 3]`` → float32 ``[B, D]``."""
        return self.forward_pixels(self.inputs.image.normalize(pixels))

    def forward_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Prepared pixels ``[B, S, S, 3]`` (channels-last) → float32 ``[B, D]``, ``batch_size`` rows at a time."""
        import torch

        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        for part in self.chunks(len(pixels)):
            x = self.pixels_to_device(pixels[part])                       # [B, 3, S, S]
            with torch.inference_mode(), self.autocast():
                out[part] = self.finish(self.model.encode_image(x))       # [B, D]
        return out

    def forward(self, inputs: Mapping) -> dict[str, np.ndarray]:
        image, text = self.feature_name("clip_image"), self.feature_name("clip_text")
        pixels = np.asarray(inputs[input_column(image, "pixels")])
        ids = np.asarray(inputs[input_column(text, "ids")])
        out = self.masked(image, inputs, lambda rows: self.forward_pixels(pixels[rows]))
        out.update(self.masked(text, inputs, lambda rows: self.forward_tokens(ids[rows])))
        return out


def _clip_architecture(path: Path) -> str:
    """A readable architecture for the fingerprint: the folder's model config, hashed."""
    import hashlib
    import json

    cfg = path / "open_clip_config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{path} is not an OpenCLIP folder: no open_clip_config.json")
    model_cfg = json.loads(cfg.read_text()).get("model_cfg", {})
    text = json.dumps(model_cfg, sort_keys=True)
    return f"{model_cfg.get('vision_cfg', {}).get('width', '?')}w-" + \
        hashlib.sha256(text.encode()).hexdigest()[:12]
