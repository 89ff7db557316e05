"""Stage 5, evaluation: models and reference rows on the same folds.

``folds.py`` (in-platform and leave-one-platform-out folds, coverage), ``references.py`` (the tuned
TF-IDF + linear baseline, a logistic regression per embedding, their sum), ``grid.py``
(:func:`evaluate`: trains every model with :mod:`prodcat.train`, per fold and seed, and scores it
with the one hF), ``predictions.py`` (every fold's predictions as Parquet), ``report.py``
(``results.json``, ``report.md``, PNG plots).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["EvaluateConfig", "GridSettings"],
        "grid": ["evaluate", "merge_results"],
        "folds": ["Fold", "make_folds"],
        "references": ["reference_models"],
        "predictions": ["prediction_table", "write_predictions"],
        "report": ["write_report"],
    },
)
