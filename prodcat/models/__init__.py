"""Stage 3, the model: fusion of modalities, per-level heads, dynamic masking, checkpoints.

``config.py`` (:class:`ModelConfig`, importable without torch), ``preset.py`` (named presets,
``presets/<name>.yaml``: ``default`` is the default model), ``registry.py`` (the ``fusions``
and ``masking_modes`` registries), ``fusion.py`` (early, late, attention, average, concat,
linear), ``prior.py`` (the label-name prior), ``lexical.py`` (the lexical modality's TF-IDF +
linear scorer), ``masking.py`` (none, hard, soft; greedy or best-path decoding: every prediction
a valid path with hard or soft masking), ``classifier.py`` (:class:`HierarchicalClassifier`),
``loss.py`` (per-level cross-entropy as named terms), ``calibration.py`` (temperature scaling,
ECE; numpy), ``files.py`` (a checkpoint's file names and JSON, without torch) and
``checkpoint.py`` (a folder of safetensors + JSON, never pickle; :func:`load_checkpoint` →
:class:`LoadedModel`). Trained by :mod:`prodcat.train`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["ModelConfig"],
        "preset": ["load_preset", "preset_names", "ModelPreset"],
        "registry": ["fusions", "masking_modes"],
        "classifier": ["HierarchicalClassifier", "Prediction"],
        "masking": ["HierarchicalMasker", "MaskingMode"],
        "loss": ["hierarchical_loss"],
        "checkpoint": ["save_checkpoint", "load_checkpoint", "LoadedModel"],
        "calibration": ["fit_temperature", "expected_calibration_error"],
    },
)
