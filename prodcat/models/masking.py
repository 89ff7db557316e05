"""Dynamic hierarchical masking: level l's logits are restricted to the children of the level l-1
class (the true parent under teacher forcing, the predicted one otherwise).

Gross et al. (arXiv 2508.20013) mask each level's head by the parent chosen above it, so that every
prediction is a valid path. Modes (registry ``masking_modes``):

- ``none``: logits untouched; decoding takes each level's argmax independently (may be an invalid
  path: that is what ``metrics.path_consistency`` measures).
- ``hard``: ``-inf`` outside the chosen parent's children.
- ``soft``: add the log-probability of each class's parent at level l-1 (the model's own, masked
  distribution), so that ``softmax`` at level l is a path probability; decoding is restricted to
  the chosen parent's children, so paths are valid.

Decoding (``ModelConfig.decoding``): ``greedy`` takes each level's best class among the chosen
parent's children; ``best_path`` searches the whole tree for the valid path whose per-parent
softmax probabilities multiply to the most (:meth:`HierarchicalMasker.best_paths`). Training
(teacher forcing) is the same for both; the masked logits returned follow the decoded path.

Letters: B batch, L levels, C_l classes at level l. A row whose parent is a leaf (the path stopped
above level l), or is ``-1``, is *stopped*: it is left unrestricted (finite), decodes to ``-1``
and its target is ``-1`` (ignored by the loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from prodcat.core.taxonomy import Taxonomy
from prodcat.models.registry import masking_modes


@dataclass(frozen=True)
class MaskingMode:
    """A masking rule.

    Attributes:
        apply: ``(logits [B, C_l], allowed bool [B, C_l], parent_logp [B, C_l]) -> [B, C_l]``.
        restrict_decoding: True when decoding picks the argmax among the chosen parent's children.
    """

    apply: Callable[[Tensor, Tensor, Tensor], Tensor]
    restrict_decoding: bool


#: ``none``: logits untouched; decoding takes each level's own argmax
NO_MASKING = MaskingMode(lambda logits, allowed, parent_logp: logits, False)
#: ``hard``: ``-inf`` outside the chosen parent's children
HARD_MASKING = MaskingMode(lambda logits, allowed, parent_logp: logits.masked_fill(~allowed, float("-inf")), True)
#: ``soft``: add the parent's log-probability; decoding restricted to the parent's children
SOFT_MASKING = MaskingMode(lambda logits, allowed, parent_logp: logits + parent_logp, True)


#: how paths are decoded at prediction time: ``greedy`` (the best class among the chosen parent's
#: children, level by level) or ``best_path`` (the most probable valid path over the whole tree,
#: :meth:`HierarchicalMasker.best_paths`)
DECODINGS = ("greedy", "best_path")


class HierarchicalMasker(nn.Module):
    """Applies a masking mode level by level and decodes the chosen classes.

    The taxonomy's arrays are non-persistent buffers: they follow ``.to(device)`` but are not in
    ``state_dict()`` (the checkpoint stores ``taxonomy.json`` instead).

    Buffers per level l >= 1: ``child_mask_<l>`` bool ``[C_{l-1}, C_l]`` (``Taxonomy.child_masks``)
    and ``parent_index_<l>`` long ``[C_l]`` (class index of each class's parent); per level l:
    ``level_nodes_<l>`` long ``[C_l]`` (taxonomy node of each class).

    Raises:
        KeyError: for an unknown masking mode (listing the valid ones).
    """

    def __init__(self, taxonomy: Taxonomy, mode: str, decoding: str = "greedy") -> None:
        super().__init__()
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}; choose one of: {', '.join(DECODINGS)}")
        self.mode_name = mode
        self.mode = masking_modes.get(mode)
        self.decoding = decoding
        self.num_levels = taxonomy.num_levels
        for level, nodes in enumerate(taxonomy.level_nodes):
            self.register_buffer(f"level_nodes_{level}", torch.as_tensor(nodes, dtype=torch.long),
                                 persistent=False)
        for level, mask in enumerate(taxonomy.child_masks, start=1):
            parents = taxonomy.class_index[taxonomy.parent[taxonomy.level_nodes[level]]]
            self.register_buffer(f"child_mask_{level}", torch.as_tensor(mask), persistent=False)
            self.register_buffer(f"parent_index_{level}", torch.as_tensor(parents, dtype=torch.long),
                                 persistent=False)

    def forward(self, logits: list[Tensor], true_classes: Tensor | None = None,
                use_true: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """Mask ``logits`` (L tensors ``[B, C_l]``) level by level and decode the path.

        Args:
            true_classes: long ``[B, L]`` targets (-1 padded), needed when ``use_true`` is given.
            use_true: bool ``[B]``: rows whose parent is the true class (teacher forcing); the
                other rows use the class decoded at level l-1.

        Returns:
            ``(masked, chosen)``: L masked logits ``[B, C_l]`` and long ``[B, L]`` decoded classes,
            -1 once the path has stopped (with ``none``: each level's own argmax, cut after the
            first leaf; otherwise the argmax among the parent's children: a valid path).
        """
        path = self.best_paths(logits) if self.decoding == "best_path" and use_true is None else None
        masked = [logits[0]]
        chosen = [logits[0].detach().argmax(dim=1) if path is None else path[:, 0]]  # [B]
        for level in range(1, self.num_levels):
            parent = chosen[-1]
            if use_true is not None:
                parent = torch.where(use_true, true_classes[:, level - 1], parent)  # [B]
            allowed, stopped = self.allowed_children(level, parent)  # [B, C_l], [B]
            parent_logp = self.parent_logp(level, masked[-1])  # [B, C_l]
            masked.append(self.mode.apply(logits[level], allowed, parent_logp))
            chosen.append(self._choose(masked[-1], allowed).masked_fill(stopped, -1) if path is None
                          else path[:, level])
        return masked, torch.stack(chosen, dim=1)  # [B, L]

    @torch.no_grad()
    def best_paths(self, logits: list[Tensor]) -> Tensor:
        """long ``[B, L]``: for each row the valid path (root to a leaf, -1 padded) of highest
        probability, where a path's log-probability is the sum over its levels of
        ``log softmax`` of the level's logits *among the siblings* (the children of the path's own
        parent): exactly the conditionals a hard-masked head is trained on. Greedy decoding takes
        the best class at level 0 and never revisits it; this search (exact: dynamic programming
        over the tree, every leaf at every depth compared) can prefer a second-best level-0 class
        whose subtree holds a confident leaf.

        Args:
            logits: L tensors ``[B, C_l]``, unmasked.
        """
        levels = self.num_levels
        score = torch.log_softmax(logits[0].float(), dim=1)  # [B, C_0]: log-probability of a path prefix
        rows = score.shape[0]
        best = torch.full((rows,), float("-inf"), device=score.device)
        best_level = torch.zeros(rows, dtype=torch.long, device=score.device)
        best_class = torch.zeros(rows, dtype=torch.long, device=score.device)
        for level in range(1, levels + 1):
            if level < levels:
                mask = getattr(self, f"child_mask_{level}")  # [C_{l-1}, C_l]
                is_leaf = ~mask.any(dim=1)  # [C_{l-1}]
            else:
                is_leaf = torch.ones(score.shape[1], dtype=torch.bool, device=score.device)
            value, index = score.masked_fill(~is_leaf, float("-inf")).max(dim=1)  # leaves at l-1
            better = value > best
            best = torch.where(better, value, best)
            best_level = torch.where(better, torch.full_like(best_level, level - 1), best_level)
            best_class = torch.where(better, index, best_class)
            if level == levels:
                break
            z = logits[level].float()  # [B, C_l]
            parent = getattr(self, f"parent_index_{level}")  # [C_l]
            index = parent.unsqueeze(0).expand(rows, -1)
            top = torch.full_like(score, float("-inf")).scatter_reduce(
                1, index, z, reduce="amax", include_self=True)  # [B, C_{l-1}]: max over children
            total = torch.zeros_like(score).scatter_add(1, index, torch.exp(z - top[:, parent]))
            log_norm = top + torch.log(total)  # [B, C_{l-1}]: logsumexp over each class's children
            score = score[:, parent] + z - log_norm[:, parent]  # [B, C_l]
        path = torch.full((rows, levels), -1, dtype=torch.long, device=best_class.device)
        current = best_class
        for level in reversed(range(levels)):
            here = best_level == level
            below = best_level > level
            if level + 1 < levels:  # the parent of the class chosen one level down
                up = getattr(self, f"parent_index_{level + 1}")[path[:, level + 1].clamp(min=0)]
                current = torch.where(below, up, current)
            current = torch.where(here, best_class, current)
            path[:, level] = torch.where(here | below, current, torch.full_like(current, -1))
        return path

    def allowed_children(self, level: int, parent: Tensor) -> tuple[Tensor, Tensor]:
        """``(allowed bool [B, C_l], stopped bool [B])`` for ``parent`` (long ``[B]`` classes at
        level l-1, -1 = stopped): the parent's children; a stopped row (parent -1 or a leaf) is
        all True so that its logits stay finite."""
        mask = getattr(self, f"child_mask_{level}")[parent.clamp(min=0)]  # [B, C_l]
        mask = mask & (parent >= 0).unsqueeze(1)
        stopped = ~mask.any(dim=1)  # [B]
        return mask | stopped.unsqueeze(1), stopped

    def parent_logp(self, level: int, parent_logits: Tensor) -> Tensor:
        """``[B, C_l]``: log-probability at level l-1 (``parent_logits [B, C_{l-1}]``) of each
        class's parent."""
        logp = torch.log_softmax(parent_logits.float(), dim=1).to(parent_logits.dtype)
        return logp[:, getattr(self, f"parent_index_{level}")]  # [B, C_l]

    def _choose(self, masked: Tensor, allowed: Tensor) -> Tensor:
        """long ``[B]``: argmax of ``masked [B, C_l]``, among ``allowed`` when the mode restricts
        decoding."""
        scores = masked.detach()
        if self.mode.restrict_decoding:
            scores = scores.masked_fill(~allowed, float("-inf"))
        return scores.argmax(dim=1)

    def nodes(self, classes: Tensor) -> Tensor:
        """long ``[B]``: taxonomy node of the deepest class in ``classes`` (long ``[B, L]``, -1
        padded); 0 (the root) when there is none."""
        node = torch.zeros(classes.shape[0], dtype=torch.long, device=classes.device)
        for level in range(self.num_levels):
            cls = classes[:, level]
            level_node = getattr(self, f"level_nodes_{level}")[cls.clamp(min=0)]  # [B]
            node = torch.where(cls >= 0, level_node, node)
        return node
