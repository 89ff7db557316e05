"""Label-name similarity as a prior over each level's classes.

A new platform names its products in its own vocabulary, but the categories keep their names. The
prior adds ``scale * cos(x, e_c)`` to the logit of every class c at every level, where x is the
product's text embedding (an input feature, e.g. the store's ``text``) and ``e_c`` the embedding of
the class's taxonomy path ("Apparel & Accessories > Shoes"), made by the same text encoder: a
zero-shot score (as in CLIP-style label embedding; Radford et al., 2021) that transfers to
platforms the heads never saw. The label embeddings are buffers of the model, saved with its
weights, so a checkpoint carries them.

Letters: B batch, D text embedding dimension, N taxonomy nodes, L levels, C_l classes at level l.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from prodcat.core.taxonomy import Taxonomy


class LabelPrior(nn.Module):
    """Per level ``[B, C_l]`` prior logits from the cosine similarity of a text embedding ``[B, D]``
    with each class's label embedding (buffers ``label_embedding_<l>``: ``[C_l, D]``, unit norm).

    Args:
        level_sizes: ``[C_0, ..., C_{L-1}]``.
        dim: D, the text embedding's dimension.
        scale: the multiplier of the cosine (>= 0); learnable when ``learnable``.
    """

    def __init__(self, level_sizes: list[int], dim: int, scale: float, learnable: bool = False) -> None:
        super().__init__()
        for level, size in enumerate(level_sizes):
            self.register_buffer(f"label_embedding_{level}", torch.zeros(size, dim))
        if learnable:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)))
        self.num_levels = len(level_sizes)

    def set_embeddings(self, taxonomy: Taxonomy, node_embeddings: np.ndarray) -> None:
        """Fill the buffers from ``node_embeddings`` (``[N, D]``, one row per taxonomy node; rows
        are L2-normalised here).

        Raises:
            ValueError: when the shape does not match the taxonomy and D.
        """
        emb = torch.as_tensor(np.asarray(node_embeddings, np.float32))
        dim = self.label_embedding_0.shape[1]
        if emb.shape != (len(taxonomy), dim):
            raise ValueError(f"label embeddings must be [N={len(taxonomy)}, D={dim}], got {list(emb.shape)}")
        emb = nn.functional.normalize(emb, dim=1)
        for level, nodes in enumerate(taxonomy.level_nodes):
            getattr(self, f"label_embedding_{level}").copy_(emb[torch.as_tensor(nodes)])

    def forward(self, text: Tensor, present: Tensor) -> list[Tensor]:
        """``text [B, D]``, ``present`` bool ``[B]`` → L prior logits ``[B, C_l]`` (0 where the text
        feature is absent)."""
        x = nn.functional.normalize(text, dim=1) * present.unsqueeze(1).to(text.dtype)  # [B, D]
        return [self.scale * (x @ getattr(self, f"label_embedding_{level}").to(x.dtype).T)
                for level in range(self.num_levels)]


def label_texts(taxonomy: Taxonomy, mode: str) -> list[str]:
    """The text embedded for each node (``[N]``): its path (``mode="paths"``) or its name
    (``"names"``); a virtual node reads as its parent, the root as an empty string."""
    if mode not in ("paths", "names"):
        raise ValueError(f"label texts are 'paths' or 'names', got {mode!r}")
    out = [""]
    for node in range(1, len(taxonomy)):
        real = int(taxonomy.parent[node]) if taxonomy.virtual[node] else node
        out.append(taxonomy.path(real) if mode == "paths" else taxonomy.names[real])
    return out


class LexicalPrior(nn.Module):
    """The lexical model's decision scores as a decision-level input: per level l, each class gets
    the best score of the leaves below it, times a learned weight (one per level, starting at
    ``scale``), added to the fused logits. The fusion still reads the scores as a feature; this
    path lets the linear model's verdict reach every level directly (stacking at the decision
    level, Wolpert 1992), which the fusion's hidden layers may otherwise learn to ignore.

    Buffers ``leaf_ancestor_<l>`` (``[C]`` long): the class at level l of each leaf (in the sorted
    order of ``taxonomy.leaves``, the lexical feature's order), -1 when the leaf ends above l.
    """

    def __init__(self, taxonomy: Taxonomy, scale: float = 1.0) -> None:
        super().__init__()
        classes = np.stack([taxonomy.targets(int(leaf)) for leaf in np.sort(taxonomy.leaves)])  # [C, L]
        for level in range(taxonomy.num_levels):
            self.register_buffer(f"leaf_ancestor_{level}", torch.as_tensor(classes[:, level].copy()),
                                 persistent=False)
        self.weight = nn.Parameter(torch.full((taxonomy.num_levels,), float(scale)))
        self.level_sizes = list(taxonomy.level_sizes)

    def forward(self, scores: Tensor, present: Tensor) -> list[Tensor]:
        """``scores [B, C]`` (one per leaf), ``present`` bool ``[B]`` → L prior logits ``[B, C_l]``
        (0 where the feature is absent)."""
        out = []
        for level, size in enumerate(self.level_sizes):
            anc = getattr(self, f"leaf_ancestor_{level}")
            keep = anc >= 0
            best = torch.full((scores.shape[0], size), float("-inf"), dtype=scores.dtype, device=scores.device)
            best = best.scatter_reduce(1, anc[keep].expand(scores.shape[0], -1), scores[:, keep],
                                       reduce="amax", include_self=True)  # [B, C_l]
            best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
            out.append(self.weight[level] * best * present.unsqueeze(1).to(scores.dtype))
        return out
