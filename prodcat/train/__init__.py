"""Stage 4, training on Ray Train: the embedding store + labels → a calibrated checkpoint.

``features.py`` joins the store to the product table's labels and splits (:class:`FeatureTable`),
``config.py`` is :class:`TrainConfig` (model, data, optimiser, scaling), ``loop.py`` is the
per-worker loop (one epoch: train, validate hF, checkpoint, report), ``trainer.py`` the driver
(:func:`train`: a ``TorchTrainer``, early stopping, resume, the best checkpoint copied to
``<output>/model`` and calibrated). ``finetune.py`` (:func:`finetune`, with
``finetune_config.py`` and the per-worker ``finetune_loop.py``) fine-tunes a text encoder end to
end on a ``TorchTrainer`` into a new encoder version (``prodcat finetune``). Used by :mod:`prodcat.evaluate`, :mod:`prodcat.cascade` and
:mod:`prodcat.tune`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["TrainConfig", "apply_overrides"],
        "features": ["FeatureTable", "load_feature_table"],
        "trainer": ["train", "build_trainer", "TrainResult"],
        "finetune": ["finetune", "FinetuneResult"],
        "finetune_config": ["FinetuneConfig"],
    },
)
