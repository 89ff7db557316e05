"""The registries of swappable model parts, importable without torch.

- ``fusions``: fusion modules (:mod:`prodcat.models.fusion`), built as
  ``cls(config, input_dims, level_sizes)``.
- ``masking_modes``: dynamic masking rules (:mod:`prodcat.models.masking`).

Entries are lazy (``"module:attribute"``), so :class:`prodcat.models.config.ModelConfig` checks a
name without importing torch. A new fusion: write an ``nn.Module`` with that constructor and
``forward(features, present) -> L x [B, C_l]`` and register it here (or, from your own code,
``fusions.register("mine")(MyFusion)`` before the config is validated).
"""

from __future__ import annotations

from prodcat.core.registry import Registry

fusions: Registry = Registry("fusion")
fusions.register_lazy("early", "prodcat.models.fusion:EarlyFusion")
fusions.register_lazy("late", "prodcat.models.fusion:LateFusion")
fusions.register_lazy("attention", "prodcat.models.fusion:AttentionFusion")
fusions.register_lazy("average", "prodcat.models.fusion:AverageFusion")
fusions.register_lazy("concat", "prodcat.models.fusion:ConcatFusion")
fusions.register_lazy("linear", "prodcat.models.fusion:LinearFusion")

masking_modes: Registry = Registry("masking mode")
masking_modes.register_lazy("none", "prodcat.models.masking:NO_MASKING")
masking_modes.register_lazy("hard", "prodcat.models.masking:HARD_MASKING")
masking_modes.register_lazy("soft", "prodcat.models.masking:SOFT_MASKING")
