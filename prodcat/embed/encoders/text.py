"""Text encoders: any Hugging Face ``AutoModel`` (RoBERTa, XLM-R, BERT, MiniLM) with mean or
CLS pooling. Letters: B batch, T tokens, H hidden size = D."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prodcat.embed.encoders.base import Encoder, combined_text
from prodcat.embed.encoders.config import TextEncoderConfig
from prodcat.embed.encoders.fingerprint import Fingerprint, resolve_weights, weights_sha256


class TextEncoder(Encoder):
    """``AutoTokenizer`` + ``AutoModel`` from a local folder (hub ids are downloaded first).

    Features: ``text`` (title + description, ``text_fields=combined``), or ``title`` and
    ``description`` (``separate``), or ``title`` alone (``title``); each ``[B, H]``.

    Raises:
        FileNotFoundError / RuntimeError: weights that cannot be found (see resolve_weights).
    """

    family = "text"

    def __init__(self, config: TextEncoderConfig, cache_dir: str | Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        super().__init__(config, cache_dir)
        path = resolve_weights(config.weights, cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.features = config.feature_names()
        self.fingerprint = Fingerprint(
            architecture=f"transformers:{type(self.model).__name__}",
            weights_sha256=weights_sha256(path),
            settings={"pooling": config.pooling, "max_tokens": config.max_tokens,
                      "text_fields": config.text_fields, "normalize": config.normalize})

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 ``[B, H]`` (truncated to ``max_tokens``, padded per batch)."""
        import torch

        enc = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_tokens,
                             padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode(), self.autocast():
            hidden = self.model(**enc).last_hidden_state          # [B, T, H]
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]                                   # [B, H]
        else:
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [B, H]
        return self.finish(pooled)

    def encode(self, batch: dict) -> dict[str, np.ndarray]:
        titles, descriptions = list(batch["title"]), list(batch["description"])
        mode = self.config.text_fields
        if mode == "combined":
            texts = [combined_text(t, d) for t, d in zip(titles, descriptions)]
            return self.text_feature(self.feature_name("text"), texts, "no_text")
        out = self.text_feature(self.feature_name("title"), titles, "no_title")
        if mode == "separate":
            out.update(self.text_feature(self.feature_name("description"), descriptions,
                                         "no_description"))
        return out
