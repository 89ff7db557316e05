"""Fusion models, hierarchical heads with dynamic masking, and the hierarchical loss.

Example (B products, features ``[B, D_f]``, presence flags ``bool [B]``, targets ``[B, L]``)::

    from prodcat.models import HierarchicalClassifier, ModelConfig, hierarchical_loss

    config = ModelConfig(fusion="late", late_policy="mlp", masking="hard", modalities=["text", "image"])
    model = HierarchicalClassifier(config, taxonomy, input_dims={"text": 384, "image": 1280})
    logits = model.train()(features, present, targets)          # L x [B, C_l], teacher forcing
    terms = hierarchical_loss(logits, targets, model.level_weights)  # level<l>_loss ..., loss
    terms["loss"].backward()
    pred = model.eval().predict(features, present)              # classes, confidence, node

Importing registers the built-in fusions and masking modes in their registries; nothing else.
"""

from prodcat.models.classifier import HierarchicalClassifier, Prediction
from prodcat.models.config import ModelConfig
from prodcat.models.fusion import fusions
from prodcat.models.loss import hierarchical_loss
from prodcat.models.masking import HierarchicalMasker, MaskingMode, masking_modes

__all__ = ["HierarchicalClassifier", "HierarchicalMasker", "MaskingMode", "ModelConfig",
           "Prediction", "fusions", "hierarchical_loss", "masking_modes"]
