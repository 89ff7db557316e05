"""Label embeddings for the label prior (:mod:`prodcat.models.prior`): every taxonomy node's path
(or name) embedded by the very text encoder that made the feature it is compared with, as recorded
in the embedding store's manifest (encoder config and weights fingerprint), so label and product
vectors share one space. Letters: N taxonomy nodes, D embedding dimension.
"""

from __future__ import annotations

import numpy as np
from pydantic import TypeAdapter

from prodcat.core.taxonomy import Taxonomy
from prodcat.embed.encoders import EncoderConfig, build_encoder
from prodcat.models.config import ModelConfig
from prodcat.models.prior import label_texts


def label_embeddings(taxonomy: Taxonomy, model: ModelConfig, manifest: dict) -> np.ndarray | None:
    """``[N, D]`` float32 label embeddings for ``model``'s label prior, None when it has none.

    Raises:
        ValueError: when the store's manifest records no encoder config for the prior's feature
            (e.g. a synthetic store), so the labels cannot be embedded in the same space.
    """
    if model.label_prior == "none":
        return None
    feature = model.label_prior_feature
    entry = (manifest.get("features") or {}).get(feature, {})
    if not entry.get("config"):
        raise ValueError(f"the embedding store records no encoder config for feature {feature!r}, so "
                         "its labels cannot be embedded in the same space; set model.label_prior=none "
                         "or embed the products with `prodcat embed`")
    config = TypeAdapter(EncoderConfig).validate_python({**entry["config"], "device": "cpu"})
    encoder = build_encoder(config)
    found = encoder.fingerprint.key
    if entry.get("fingerprint", {}).get("key") not in (None, found):
        raise ValueError(f"the text encoder of feature {feature!r} now loads other weights "
                         f"({found}) than the store's ({entry['fingerprint']['key']})")
    texts = label_texts(taxonomy, model.label_prior)
    emb = np.zeros((len(texts), encoder.dim), np.float32)
    emb[1:] = encoder.encode_texts(texts[1:])
    return emb
