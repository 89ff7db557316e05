"""Stage 5, evaluation: models and baselines on the same folds.

``folds.py`` (in-platform and leave-one-platform-out folds, coverage), ``baselines.py`` (TF-IDF +
linear SVM), ``grid.py`` (:func:`evaluate`: trains every grid cell with :mod:`prodcat.train` and
scores it with the one hF), ``report.py`` (``results.json``, ``report.md``, PNG plots).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["EvaluateConfig", "GridSettings"],
        "grid": ["evaluate", "merge_results"],
        "folds": ["Fold", "make_folds"],
        "baselines": ["TfidfBaseline", "TfidfConfig"],
        "report": ["write_report"],
    },
)
