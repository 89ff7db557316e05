"""Stage 6, tuning: Ray Tune sweeps over the training config (``python -m prodcat.tune`` or
``prodcat tune``).

``space.py`` (search spaces as YAML over ``TrainConfig`` fields, checked before anything runs),
``sweep.py`` (trials are ``prodcat train`` runs under ASHA; resumable, local or ``s3://``),
``results.py`` (the report: trials table, best config, plot), ``cleanup.py`` (what ASHA-stopped
trials leave behind), ``cli.py`` (the command). The spaces themselves live in the repository's
top-level ``tune/spaces/``. Ray's own package is ``ray.tune``.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "sweep": ["build_spec", "run_sweep", "report_sweep"],
        "space": ["load_space"],
        "cli": ["main"],
    },
)
