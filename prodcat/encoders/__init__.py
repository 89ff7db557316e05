"""Encoder families behind one registry: ``text`` (Hugging Face AutoModel), ``image`` (timm),
``joint`` (OpenCLIP).

    from prodcat.encoders import build_encoder, TextEncoderConfig
    enc = build_encoder(TextEncoderConfig(weights="shared:models/all-MiniLM-L6-v2"))
    enc.encode_texts(["red cotton shirt"])        # float32 [1, 384]
    enc.fingerprint.key                           # architecture + weights sha256 + settings

Importing this package loads no model library; each family imports torch and its library when
it is built.
"""

from __future__ import annotations

from pathlib import Path

from prodcat.encoders.config import (EncoderBase, EncoderConfig, ImageEncoderConfig,
                                     JointEncoderConfig, TextEncoderConfig)
from prodcat.encoders.fingerprint import Fingerprint, resolve_weights, weights_sha256
from prodcat.registry import Registry

#: family name → "module:Class" of its encoder (imported when built)
ENCODERS: Registry[str] = Registry("encoder family")
ENCODERS.register("text")("prodcat.encoders.text:TextEncoder")
ENCODERS.register("image")("prodcat.encoders.image:ImageEncoder")
ENCODERS.register("joint")("prodcat.encoders.joint:JointEncoder")


def list_encoders() -> list[str]:
    """Registered encoder families, sorted."""
    return ENCODERS.names()


def encoder_class(family: str):
    """The encoder class of ``family``.

    Raises:
        KeyError: for an unknown family, listing the registered ones.
    """
    import importlib

    module, _, name = ENCODERS.get(family).partition(":")
    return getattr(importlib.import_module(module), name)


def build_encoder(config: EncoderBase, cache_dir: str | Path | None = None):
    """Build the encoder that ``config`` describes (weights resolved, model in eval mode).

    Raises:
        KeyError: unknown family. FileNotFoundError / RuntimeError: weights not found.
    """
    return encoder_class(config.family)(config, cache_dir)


__all__ = ["ENCODERS", "EncoderConfig", "EncoderBase", "TextEncoderConfig", "ImageEncoderConfig",
           "JointEncoderConfig", "Fingerprint", "build_encoder", "encoder_class", "list_encoders",
           "resolve_weights", "weights_sha256"]
