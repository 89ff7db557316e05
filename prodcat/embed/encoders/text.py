"""Text encoders: any Hugging Face ``AutoModel`` (RoBERTa, XLM-R, BERT, MiniLM) with mean or
CLS pooling. Letters: B batch, T tokens, H hidden size = D."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from prodcat.embed.encoders.base import Encoder
from prodcat.embed.encoders.config import TextEncoderConfig
from prodcat.embed.encoders.fingerprint import Fingerprint, resolve_weights, weights_sha256
from prodcat.embed.encoders.inputs import TextInputs, input_column


def pool_hidden(hidden, mask, pooling: str):
    """Token states ``[B, T, H]`` and mask ``[B, T]`` → one vector per row ``[B, H]``: the mean
    over real tokens (``mean``) or the first token (``cls``), in float32 whatever precision
    autocast computed the states in. The text encoder and fine-tuning
    (:mod:`prodcat.train.finetune_loop`) both pool here, so a fine-tuned encoder is a drop-in."""
    hidden = hidden.float()
    if pooling == "cls":
        return hidden[:, 0]                                                  # [B, H]
    weights = mask.unsqueeze(-1).to(hidden.dtype)                            # [B, T, 1]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)         # [B, H]


class TextEncoder(Encoder):
    """``AutoTokenizer`` + ``AutoModel`` from a local folder (hub ids are downloaded first).

    Features: ``text`` (title + description, ``text_fields=combined``), or ``title`` and
    ``description`` (``separate``), or ``title`` alone (``title``); each ``[B, H]``. Tokenizing
    is the CPU half (:class:`prodcat.embed.encoders.inputs.TextInputs`); the forward sorts rows
    by token count and trims each chunk of ``batch_size`` rows to its longest row, so little of
    the compute goes to padding (padding never changes a vector: it is masked out).

    Raises:
        FileNotFoundError / RuntimeError: weights that cannot be found (see resolve_weights).
    """

    family = "text"

    def __init__(self, config: TextEncoderConfig, cache_dir: str | Path | None = None) -> None:
        import torch
        from transformers import AutoModel

        super().__init__(config, cache_dir)
        path = resolve_weights(config.weights, cache_dir)
        self.inputs = TextInputs(config, None if cache_dir is None else str(cache_dir))
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.features = config.feature_names()
        self.fingerprint = Fingerprint(
            architecture=f"transformers:{type(self.model).__name__}",
            weights_sha256=weights_sha256(path),
            settings={"pooling": config.pooling, "max_tokens": config.max_tokens,
                      "text_fields": config.text_fields, "normalize": config.normalize})

    @property
    def tokenizer(self):
        return self.inputs.tokenizer

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts → float32 ``[B, H]`` (truncated to ``max_tokens``)."""
        return self.forward_tokens(*self.inputs.tokenize(list(texts)))

    def forward_tokens(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """int ids ``[B, T]`` and mask ``[B, T]`` → float32 ``[B, H]``, in chunks of
        ``batch_size`` rows of similar length, each trimmed to its longest row."""
        lengths = np.asarray(mask).sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(order), self.dim), dtype=np.float32)
        for part in self.chunks(len(order)):
            rows = order[part]
            width = max(1, int(lengths[rows].max()))
            out[rows] = self._forward(ids[rows, :width], mask[rows, :width])
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        ids_t = self.to_device(ids).long()                                # [B, T]
        mask_t = self.to_device(mask).long()                              # [B, T]
        with torch.inference_mode(), self.autocast():
            hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state  # [B, T, H]
        return self.finish(pool_hidden(hidden, mask_t, self.config.pooling))

    def forward(self, inputs: Mapping) -> dict[str, np.ndarray]:
        out = {}
        for feature in self.features:
            ids = np.asarray(inputs[input_column(feature, "ids")])
            mask = np.asarray(inputs[input_column(feature, "mask")])
            out.update(self.masked(feature, inputs, lambda rows: self.forward_tokens(ids[rows], mask[rows])))
        return out
