"""Stage 8, the two-stage cascade: a light text stage, then the multimodal stage for the rest.

``policy.py`` is the pure routing rule and the hF-against-escalation curve (numpy only),
``spec.py`` the deployed cascade (``cascade.json``: two checkpoints, temperatures, τ),
``bundle.py`` the self-contained cascade folder (``prodcat cascade export``),
``stage.py`` one stage on raw products (:class:`StageRunner`: encoders + checkpoint; the same
object in Serve replicas and bulk-scoring actors), ``fit.py`` fits temperatures and τ on
validation and reports the trade-off (``prodcat cascade fit``, config in ``config.py``). The cascade
runs over a whole catalogue in :mod:`prodcat.score` (``prodcat score``) and over HTTP in
:mod:`prodcat.serve`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "policy": ["route", "combine_confidence", "cascade_curve", "choose_threshold", "CascadeGoal", "CascadeCurve", "ESCALATE_ALL"],
        "spec": ["CascadeSpec", "read_cascade", "write_cascade", "resolve_cascade"],
        "bundle": ["export_cascade"],
        "config": ["CascadeFitConfig"],
        "stage": ["StageRunner"],
        "fit": ["fit_cascade"],
    },
)
