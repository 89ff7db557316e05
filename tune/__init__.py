"""Ray Tune sweeps over prodcat's training config: search spaces (``tune/spaces/*.yaml``), the
sweep (:mod:`tune.sweep`), its report (:mod:`tune.results`) and the ``python -m tune`` entry point
(:mod:`tune.cli`).

This package is imported as ``tune``; Ray's is always ``ray.tune`` (``from ray import tune``), so
the two never shadow each other. Importing it starts nothing and imports neither Ray nor torch.
"""
