"""Joint encoders: the image and text towers of one OpenCLIP model.
Letters: B batch, S input size (px), T context length, D joint embedding size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prodcat.embed.encoders.base import Encoder, combined_text
from prodcat.embed.encoders.config import JointEncoderConfig
from prodcat.embed.encoders.fingerprint import Fingerprint, resolve_weights, weights_sha256


class JointEncoder(Encoder):
    """OpenCLIP from a folder in its hub layout (``open_clip_config.json`` + weights), or from a
    bare checkpoint file with ``architecture`` naming a built-in OpenCLIP model.

    Features: ``clip_image`` and ``clip_text`` (title + description), both ``[B, D]`` in one space.

    Raises:
        FileNotFoundError: weights or config missing. ValueError: a bare file without
            ``architecture``.
    """

    family = "joint"

    def __init__(self, config: JointEncoderConfig, cache_dir: str | Path | None = None) -> None:
        import open_clip

        super().__init__(config, cache_dir)
        path = resolve_weights(config.weights, cache_dir)
        if path.is_dir():
            name, pretrained = f"local-dir:{path}", None
            architecture = _clip_architecture(path)
        elif config.architecture:
            name, pretrained, architecture = config.architecture, str(path), config.architecture
        else:
            raise ValueError(f"{config.weights} is a single checkpoint file: set architecture "
                             "to its OpenCLIP model name (e.g. ViT-B-32)")
        self.model = open_clip.create_model(name, pretrained=pretrained,
                                            device=self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(name, context_length=config.max_tokens)
        visual = self.model.visual
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        pre = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = tuple(pre.get("mean") or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(pre.get("std") or open_clip.OPENAI_DATASET_STD)
        self.dim = int(getattr(visual, "output_dim", 0) or self._probe_dim())
        self.features = config.feature_names()
        self.fingerprint = Fingerprint(
            architecture=f"open_clip:{architecture}", weights_sha256=weights_sha256(path),
            settings={"image_size": self.image_size, "context_length": config.max_tokens,
                      "normalize": config.normalize, "mean": list(self.mean),
                      "std": list(self.std)})

    def _probe_dim(self) -> int:
        import torch

        with torch.inference_mode():
            return int(self.model.encode_text(self.tokenizer(["x"]).to(self.device)).shape[-1])

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 ``[B, D]`` (truncated to the context length)."""
        import torch

        tokens = self.tokenizer(list(texts)).to(self.device)          # [B, T]
        with torch.inference_mode(), self.autocast():
            return self.finish(self.model.encode_text(tokens))        # [B, D]

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [B, S, S, 3]`` → float32 ``[B, D]``."""
        import torch

        x = self.pixels_to_tensor(pixels, self.mean, self.std)        # [B, 3, S, S]
        with torch.inference_mode(), self.autocast():
            return self.finish(self.model.encode_image(x))            # [B, D]

    def encode(self, batch: dict) -> dict[str, np.ndarray]:
        texts = [combined_text(t, d) for t, d in zip(batch["title"], batch["description"])]
        out = self.image_feature(self.feature_name("clip_image"), batch)
        out.update(self.text_feature(self.feature_name("clip_text"), texts, "no_text"))
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
