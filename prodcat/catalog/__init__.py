"""Stage 1, catalogue build: platform exports → the product table.

``adapter.py`` reads each platform's export (CSV, JSON Lines, Parquet; a YAML config per
platform in ``platforms/``), ``text.py`` cleans titles and descriptions, ``mapping.py`` maps each
platform category to a Google Product Taxonomy id (hand-curated tables in ``mappings/``),
``split.py`` assigns train/val/test splits and the leave-one-platform-out folds, ``build.py``
writes ``products.parquet`` (``prodcat.core.schema.PRODUCT_SCHEMA``), ``rejects.parquet`` (every
record not kept, with its reason), ``taxonomy.json`` and a build summary. Next stage:
:mod:`prodcat.embed`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "adapter": ["AdapterConfig", "load_adapter", "builtin_platforms", "read_products"],
        "build": ["BuildConfig", "build_catalog", "read_protocol"],
        "mapping": ["CategoryMapping"],
        "text": ["clean_text"],
        "split": ["split_of"],
    },
)
