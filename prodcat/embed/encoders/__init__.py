"""Encoder families behind one registry: ``text`` (Hugging Face AutoModel), ``image`` (timm),
``joint`` (OpenCLIP).

    from prodcat.embed.encoders import build_encoder, TextEncoderConfig
    enc = build_encoder(TextEncoderConfig(weights="shared:models/all-MiniLM-L6-v2"))
    enc.encode_texts(["red cotton shirt"])        # float32 [1, 384]
    enc.fingerprint.key                           # architecture + weights sha256 + settings

Importing this package loads no model library; each family imports torch and its library when
it is built.
"""

from __future__ import annotations

from pathlib import Path

from prodcat.core.registry import Registry
from prodcat.embed.encoders.config import (
    EncoderBase,
    EncoderConfig,
    ImageEncoderConfig,
    JointEncoderConfig,
    TextEncoderConfig,
)
from prodcat.embed.encoders.fingerprint import Fingerprint, resolve_weights, weights_sha256

#: family name → its encoder class (a lazy entry: imported when first built)
ENCODERS: Registry = Registry("encoder family")
ENCODERS.register_lazy("text", "prodcat.embed.encoders.text:TextEncoder")
ENCODERS.register_lazy("image", "prodcat.embed.encoders.image:ImageEncoder")
ENCODERS.register_lazy("joint", "prodcat.embed.encoders.joint:JointEncoder")


def list_encoders() -> list[str]:
    """Registered encoder families, sorted."""
    return ENCODERS.names()


def encoder_class(family: str):
    """The encoder class of ``family``.

    Raises:
        KeyError: for an unknown family, listing the registered ones.
    """
    return ENCODERS.get(family)


def build_encoder(config: EncoderBase, cache_dir: str | Path | None = None):
    """Build the encoder that ``config`` describes (weights resolved, model in eval mode).

    Raises:
        KeyError: unknown family. FileNotFoundError / RuntimeError: weights not found.
    """
    return encoder_class(config.family)(config, cache_dir)


__all__ = ["ENCODERS", "EncoderConfig", "EncoderBase", "TextEncoderConfig", "ImageEncoderConfig",
           "JointEncoderConfig", "Fingerprint", "build_encoder", "encoder_class", "list_encoders",
           "resolve_weights", "weights_sha256"]
