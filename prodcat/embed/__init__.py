"""Stage 2, embedding: the product table → the embedding store, on Ray Data.

``encoders/`` is the registry of encoder families (text: Hugging Face ``AutoModel``; image: timm;
joint: OpenCLIP), each with a fingerprint of its weights; ``imaging.py`` decodes images safely
(byte and pixel limits, a reason for every failure); ``extractor.py`` is the per-batch code (the
same object in Ray Data actors and Serve replicas); ``pipeline.py`` streams products through
decode tasks and one actor pool per encoder; ``store.py`` is the embedding store (Parquet parts +
``manifest.json``, resumable, never mixing vectors from other weights; an encoder added later
gets parts of its own beside the stored features). Next stage:
:mod:`prodcat.models` (the classifier) and :mod:`prodcat.train`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "pipeline": ["EmbedConfig", "run_embedding"],
        "extractor": ["FeatureExtractor", "decode_images"],
        "store": ["read_store", "read_manifest", "read_vectors", "embedded_ids", "StoreMismatch",
                  "feature_matrix"],
        "imaging": ["ImageLimits", "ImageDecodeError", "decode_image", "load_image"],
    },
)
