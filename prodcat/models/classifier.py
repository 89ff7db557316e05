"""The hierarchical classifier: a fusion module, one head per level, dynamic masking.

Gross et al., "Cross-Platform E-Commerce Product Categorization and Recategorization" (arXiv
2508.20013): features of several modalities are fused, each taxonomy level has its own head, and
level l's logits are masked by the level l-1 class (the true parent during training under teacher
forcing, the predicted one at inference) so that every prediction is a valid path.

Letters: B batch, D_f feature dimension of feature f, L levels, C_l classes at level l.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prodcat.core.taxonomy import Taxonomy
from prodcat.models.config import ModelConfig
from prodcat.models.masking import HierarchicalMasker
from prodcat.models.prior import LabelPrior, LexicalPrior
from prodcat.models.registry import fusions


@dataclass
class Prediction:
    """Decoded predictions for a batch.

    Attributes:
        classes: long ``[B, L]`` class index per level, -1 after the predicted leaf.
        confidence: float ``[B, L]`` softmax probability in [0, 1] of the chosen class at each
            level (over the masked logits, after temperature scaling); 0 where padded.
        node: long ``[B]`` taxonomy node reached (0 = root when nothing was predicted).
    """

    classes: Tensor
    confidence: Tensor
    node: Tensor

    def cpu(self) -> "Prediction":
        """The same prediction with every tensor on the CPU (then ``.numpy()`` per field)."""
        return Prediction(self.classes.cpu(), self.confidence.cpu(), self.node.cpu())


class HierarchicalClassifier(nn.Module):
    """Fusion + per-level heads + dynamic masking over ``taxonomy``.

    Args:
        config: the model hyper-parameters.
        taxonomy: the label tree (its child masks become non-persistent buffers, so they follow
            ``.to(device)`` and ``state_dict()`` holds only learned weights).
        input_dims: ``D_f`` per feature name; must cover ``config.modalities`` (extra ignored).
        label_embeddings: ``[N, D]`` label embeddings of every taxonomy node for the label prior
            (:mod:`prodcat.models.prior`); None leaves its buffers at zero, to be loaded from a
            checkpoint's weights.

    Raises:
        ValueError: when a modality has no input dimension, the taxonomy has no level, or
            ``config.level_weights`` does not have one weight per taxonomy level.
    """

    def __init__(self, config: ModelConfig, taxonomy: Taxonomy, input_dims: dict[str, int],
                 label_embeddings=None) -> None:
        super().__init__()
        missing = [f for f in config.modalities if f not in input_dims]
        if missing:
            raise ValueError(f"input_dims lacks modalities {missing}; it has {sorted(input_dims)}")
        levels = taxonomy.num_levels
        if levels == 0:
            raise ValueError(f"taxonomy {taxonomy.version} has only a root: nothing to classify")
        if config.level_weights is not None and len(config.level_weights) != levels:
            raise ValueError(f"level_weights has {len(config.level_weights)} entries but taxonomy "
                             f"{taxonomy.version} has {levels} levels")
        self.config = config
        self.level_sizes = list(taxonomy.level_sizes)
        self.input_dims = {f: int(input_dims[f]) for f in config.modalities}
        self.fusion = fusions.get(config.fusion)(config, self.input_dims, self.level_sizes)
        self.masker = HierarchicalMasker(taxonomy, config.masking, config.decoding)
        self.prior = None
        if config.label_prior != "none":
            self.prior = LabelPrior(self.level_sizes, self.input_dims[config.label_prior_feature],
                                    config.label_prior_scale, config.label_prior_learnable)
            if label_embeddings is not None:
                self.prior.set_embeddings(taxonomy, label_embeddings)
        self.lexical_prior = LexicalPrior(taxonomy) if config.lexical_prior else None

    @property
    def num_levels(self) -> int:
        """L: the number of taxonomy levels."""
        return len(self.level_sizes)

    @property
    def level_weights(self) -> list[float]:
        """Loss weight per level (all 1 unless configured)."""
        return list(self.config.level_weights or [1.0] * self.num_levels)

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor] | None = None,
                targets: Tensor | None = None, teacher_forcing: bool | None = None) -> list[Tensor]:
        """Masked logits per level.

        Args:
            features: ``[B, D_f]`` per modality (extra keys ignored; absent rows may hold anything,
                NaN included).
            present: bool ``[B]`` per modality, False where it is missing; None or a missing key =
                all present. A row with a NaN or inf value is treated as missing either way.
            targets: long ``[B, L]`` true classes (-1 padded), used for teacher forcing.
            teacher_forcing: None = the config's rule (in training mode with targets, each product
                is masked by its true parents with probability ``config.teacher_forcing``);
                True = always the true parents (needs ``targets``); False = always predicted ones.

        Returns:
            L tensors ``[B, C_l]``: logits masked per ``config.masking`` (``-inf`` outside the
            allowed children with ``hard``; rows whose path has ended are left unrestricted).

        Raises:
            KeyError: when a modality is missing from ``features``.
            ValueError: on a wrong ``targets`` shape, or ``teacher_forcing=True`` without targets.
        """
        return self._run(features, present, targets, teacher_forcing)[0]

    @torch.no_grad()
    def serving(self, features: dict[str, Tensor], present: dict[str, Tensor] | None = None
                ) -> tuple[list[Tensor], Tensor]:
        """``(masked logits L x [B, C_l], classes long [B, L])`` with predicted parents (no teacher
        forcing, no gradients): what the service computes, in one forward pass."""
        return self._run(features, present, None, False)

    @torch.no_grad()
    def predict(self, features: dict[str, Tensor], present: dict[str, Tensor] | None = None,
                temperature: float = 1.0) -> Prediction:
        """Decode paths with predicted parents (no teacher forcing, no gradients).

        Runs in whatever train/eval mode the module is in; call ``.eval()`` first for
        deterministic output.

        Args:
            temperature: > 0; confidences are ``softmax(logits / temperature)`` (calibration).

        Raises:
            ValueError: when ``temperature <= 0``; see :meth:`forward` for the rest.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        masked, classes = self._run(features, present, None, False)
        confidence = torch.stack([
            torch.softmax(logits.float() / temperature, dim=1).gather(
                1, classes[:, level].clamp(min=0).unsqueeze(1)).squeeze(1)
            for level, logits in enumerate(masked)], dim=1)  # [B, L]
        confidence = torch.where(classes >= 0, confidence, torch.zeros_like(confidence))
        return Prediction(classes=classes, confidence=confidence, node=self.masker.nodes(classes))

    def _run(self, features, present, targets, teacher_forcing) -> tuple[list[Tensor], Tensor]:
        """Fusion then masking: ``(masked L x [B, C_l], decoded classes long [B, L])``."""
        feats, flags = self._inputs(features, present)
        x = next(iter(feats.values()))
        if targets is not None:
            targets = targets.to(device=x.device, dtype=torch.long)
        use_true = self._use_true(targets, teacher_forcing, x.shape[0])
        logits = self.fusion(feats, flags)
        if self.prior is not None:
            f = self.config.label_prior_feature
            logits = [z + p for z, p in zip(logits, self.prior(feats[f], flags[f]))]
        if self.lexical_prior is not None:
            logits = [z + p for z, p in zip(logits, self.lexical_prior(feats["lexical"], flags["lexical"]))]
        return self.masker(logits, targets, use_true)

    def _inputs(self, features, present) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Model-dtype features and bool presence flags on the features' device; a row with a
        non-finite value counts as absent."""
        dtype = next(self.parameters()).dtype
        feats, flags = {}, {}
        for f in self.config.modalities:
            if f not in features:
                raise KeyError(f"features lack modality {f!r} (model uses {self.config.modalities}; "
                               f"got {sorted(features)}); pass zeros with present[{f!r}] False")
            x = features[f]
            batch = next(iter(feats.values())).shape[0] if feats else x.shape[0]
            if x.dim() != 2 or x.shape != (batch, self.input_dims[f]):
                raise ValueError(f"features[{f!r}] must be [B={batch}, {self.input_dims[f]}], "
                                 f"got {list(x.shape)}")
            feats[f] = x.to(dtype)
            flag = (present or {}).get(f)
            finite = torch.isfinite(feats[f]).all(dim=1)  # [B]
            flags[f] = finite if flag is None else finite & flag.to(device=x.device, dtype=torch.bool)
        return feats, flags

    def _use_true(self, targets, teacher_forcing, batch) -> Tensor | None:
        """bool ``[B]``: products masked by their true parents, or None (all predicted)."""
        if teacher_forcing is True and targets is None:
            raise ValueError("teacher_forcing=True needs targets")
        if targets is None or teacher_forcing is False:
            return None
        if targets.dim() != 2 or tuple(targets.shape) != (batch, self.num_levels):
            raise ValueError(f"targets must be [B={batch}, L={self.num_levels}], "
                             f"got {list(targets.shape)}")
        if teacher_forcing is True:
            return torch.ones(batch, dtype=torch.bool, device=targets.device)
        if not self.training:
            return None
        p = self.config.teacher_forcing
        return torch.rand(batch, device=targets.device) < p
