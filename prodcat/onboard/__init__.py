"""Stage 10, onboarding a new platform: mapping suggestions a person confirms, measured as a new
platform would be met.

``suggest.py`` reads an unmapped export through the generic adapter, categorizes its products
with bulk scoring (:mod:`prodcat.score`) and proposes the top Google categories per source
category with their evidence (``prodcat catalog suggest-mapping``: ``mapping.yaml`` with every
entry ``accepted: false``, ``suggestions.parquet``, ``review.html`` from ``page.py``);
``compare.py`` scores suggestions against a hand-made mapping; ``measure.py`` does it for every
leave-one-platform-out fold with a model trained without the held-out platform, with the fold's
partial-path (abstention) curve (``prodcat onboard measure``, the main job's ``onboard`` stage).
The review itself (``prodcat catalog review``) and the build's refusal of unreviewed entries are
:mod:`prodcat.catalog` (``review.py``, ``mapping.py``). Comes after :mod:`prodcat.score`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["SuggestConfig", "MeasureConfig"],
        "suggest": ["suggest_mapping", "suggest", "vote", "resolve_model"],
        "measure": ["measure"],
    },
)
