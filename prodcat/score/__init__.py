"""Stage 9, bulk scoring: the cascade that :mod:`prodcat.cascade` fitted, over a whole catalogue,
as a Ray Data job (``prodcat score``); every input row appears exactly once, predicted or with its
error.

``config.py`` is :class:`ScoreConfig`, ``inputs.py`` any table, CSV, JSON Lines file or raw export →
rows (none dropped), ``features.py`` the embedding-store vectors a run reuses, ``job.py`` the actor
pools (one :class:`prodcat.cascade.stage.StageRunner` per actor, as in the Serve replicas) and the
job, ``parts.py`` the resumable prediction parts, ``evaluation.py`` hF of a predictions folder.
Takes a ``cascade.json`` (:mod:`prodcat.cascade`) and a catalogue; writes a predictions folder.
Served online instead by :mod:`prodcat.serve`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["ScoreConfig"],
        "job": ["score"],
        "evaluation": ["evaluate_prediction_table", "evaluate_output"],
        "features": ["attach_store", "checkpoint_fingerprints", "fingerprint_mismatches"],
        "parts": ["read_predictions"],
        "inputs": ["read_input"],
    },
)
