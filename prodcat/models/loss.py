"""Hierarchical loss: cross-entropy per level, returned as named terms (open_clip style).

Letters: B batch, L levels, C_l classes at level l.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def level_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits [B, C_l]`` against ``target`` long ``[B]`` over the rows that
    count; 0 when none does.

    A row is ignored when its target is -1 (the path ended above this level) or when the target's
    logit is ``-inf``: hard masking by a wrong *predicted* parent made it unreachable, and that
    mistake is already counted at the level above. NaN-free by construction (masked rows are
    replaced before the softmax, not multiplied by 0 after it).
    """
    safe_target = target.clamp(min=0)  # [B]
    target_logit = logits.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # [B]
    valid = (target >= 0) & torch.isfinite(target_logit)  # [B]
    safe_logits = torch.where(valid.unsqueeze(1), logits, torch.zeros_like(logits))  # [B, C_l]
    ce = F.cross_entropy(safe_logits.float(), safe_target, reduction="none")  # [B]
    ce = torch.where(valid, ce, torch.zeros_like(ce))
    return ce.sum() / valid.sum().clamp(min=1)


def hierarchical_loss(logits: Sequence[Tensor], targets: Tensor,
                      weights: Sequence[float] | None = None) -> dict[str, Tensor]:
    """Per-level cross-entropy and their weighted sum.

    Args:
        logits: L tensors ``[B, C_l]`` (masked logits from ``HierarchicalClassifier.forward``).
        targets: long ``[B, L]``, -1 below a product's leaf (``Taxonomy.targets``).
        weights: ``L`` non-negative level weights; None = all 1.

    Returns:
        ``{"level0_loss": ..., ..., "level<L-1>_loss": ..., "loss": sum_l w_l * level<l>_loss}``;
        each level term is the (unweighted) mean over the products that have a reachable target
        at that level (see :func:`level_cross_entropy`), a scalar tensor.

    Raises:
        ValueError: when ``targets`` is not ``[B, L]`` for the L given logits, or ``weights`` has
            another length than L.
    """
    num_levels = len(logits)
    if targets.dim() != 2 or targets.shape[1] != num_levels or targets.shape[0] != logits[0].shape[0]:
        raise ValueError(f"targets must be [B={logits[0].shape[0]}, L={num_levels}], "
                         f"got {list(targets.shape)}")
    weights = [1.0] * num_levels if weights is None else list(weights)
    if len(weights) != num_levels:
        raise ValueError(f"got {len(weights)} level weights for {num_levels} levels")
    terms = {f"level{l}_loss": level_cross_entropy(logits[l], targets[:, l]) for l in range(num_levels)}
    terms["loss"] = sum(w * terms[f"level{l}_loss"] for l, w in enumerate(weights))
    return terms
