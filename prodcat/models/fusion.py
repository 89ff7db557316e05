"""Fusion modules: from per-modality features to per-level (unmasked) logits.

Every fusion in the registry ``prodcat.models.registry.fusions`` is an ``nn.Module`` built as
``cls(config, input_dims, level_sizes)`` and called as ``module(features, present)`` with
``features[f]: [B, D_f]`` and ``present[f]: bool [B]``; it returns L logits ``[B, C_l]``. A missing
modality (``present`` False) is masked, never dropped: its (possibly NaN) features are not read.

- ``early`` (Gross et al., arXiv 2508.20013): project each modality to ``[B, H]`` (a learned
  "missing" vector where absent), concatenate, MLP, one linear head per level.
- ``late`` (Gross et al.; Wirojwatanakul & Wangperawong's policy network): one MLP + level heads
  per modality, then a per-level fusion of their logits by ``config.late_policy``: ``mean``,
  ``max`` (over present modalities) or ``mlp`` (mean plus a learned MLP over every modality's
  class probabilities and presence flags; its last layer starts at zero, i.e. at ``mean``).
- ``attention``: one token per modality (projection + modality embedding) and a learned pooling
  token through a pre-norm self-attention block; absent modalities are key-padding-masked; the
  pooling token's output feeds the level heads.
- ``linear``: early fusion with no hidden layer (normalised features and presence flags into one
  linear head per level: a logistic regression per level).
- ``average`` / ``concat`` (Tashu et al.'s baseline fusion of several encoders): the masked mean
  of linear projections, or the concatenation of the raw (zero-filled) features, then an MLP.

Letters: B batch, D_f feature dimension, M modalities, H hidden dimension, L levels, C_l classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from prodcat.models.config import ModelConfig

def masked_features(features: dict[str, Tensor], present: dict[str, Tensor],
                    names: list[str]) -> list[Tensor]:
    """Per modality ``[B, D_f]`` with absent rows set to 0 (NaN-safe: ``where``, not multiply)."""
    return [torch.where(present[f].unsqueeze(1), features[f], torch.zeros_like(features[f]))
            for f in names]


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Linear → GELU → Dropout → Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim))


def projection(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """``[B, D_f] -> [B, H]``: LayerNorm → Linear → GELU → Dropout."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(),
                         nn.Dropout(dropout))


class LevelHeads(nn.Module):
    """One linear head per level: ``[B, H] -> L x [B, C_l]``."""

    def __init__(self, hidden: int, level_sizes: list[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(hidden, size) for size in level_sizes)

    def forward(self, hidden: Tensor) -> list[Tensor]:
        return [head(hidden) for head in self.heads]


class _Fusion(nn.Module):
    """Shared constructor state: modality names, dims, hidden size, dropout."""

    def __init__(self, config: "ModelConfig", input_dims: dict[str, int],
                 level_sizes: list[int]) -> None:
        super().__init__()
        self.names = list(config.modalities)
        self.dims = [int(input_dims[f]) for f in self.names]
        self.hidden = config.hidden_dim
        self.dropout = config.dropout


class EarlyFusion(_Fusion):
    """Project each modality, concatenate ``[B, M*H]``, MLP to ``[B, H]``, level heads."""

    def __init__(self, config, input_dims, level_sizes) -> None:
        super().__init__(config, input_dims, level_sizes)
        self.project = nn.ModuleList(projection(d, self.hidden, self.dropout) for d in self.dims)
        self.missing = nn.Parameter(torch.zeros(len(self.names), self.hidden))
        self.body = nn.Sequential(nn.Linear(len(self.names) * self.hidden, self.hidden), nn.GELU(),
                                  nn.Dropout(self.dropout))
        self.heads = LevelHeads(self.hidden, level_sizes)

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> list[Tensor]:
        parts = []
        for i, (f, x) in enumerate(zip(self.names, masked_features(features, present, self.names))):
            h = self.project[i](x)  # [B, H]
            parts.append(torch.where(present[f].unsqueeze(1), h, self.missing[i].expand_as(h)))
        return self.heads(self.body(torch.cat(parts, dim=1)))  # [B, M*H] -> [B, H]


class ConcatFusion(_Fusion):
    """Tashu et al.'s concatenation: raw features (zero where absent) and presence flags
    ``[B, sum D_f + M]``, MLP to ``[B, H]``, level heads."""

    def __init__(self, config, input_dims, level_sizes) -> None:
        super().__init__(config, input_dims, level_sizes)
        in_dim = sum(self.dims) + len(self.names)
        self.body = nn.Sequential(nn.Linear(in_dim, self.hidden), nn.GELU(), nn.Dropout(self.dropout))
        self.heads = LevelHeads(self.hidden, level_sizes)

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> list[Tensor]:
        xs = masked_features(features, present, self.names)
        flags = torch.stack([present[f] for f in self.names], dim=1).to(xs[0].dtype)  # [B, M]
        return self.heads(self.body(torch.cat(xs + [flags], dim=1)))


class LinearFusion(_Fusion):
    """Early fusion with linear heads: each modality LayerNorm-ed (zero where absent), the
    presence flags appended, ``[B, sum D_f + M]`` straight into one linear head per level — a
    multinomial logistic regression per level on the fused features, the least able to memorise a
    training platform's quirks."""

    def __init__(self, config, input_dims, level_sizes) -> None:
        super().__init__(config, input_dims, level_sizes)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in self.dims)
        self.drop = nn.Dropout(self.dropout)
        self.heads = LevelHeads(sum(self.dims) + len(self.names), level_sizes)

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> list[Tensor]:
        xs = masked_features(features, present, self.names)
        flags = torch.stack([present[f] for f in self.names], dim=1).to(xs[0].dtype)  # [B, M]
        normed = [torch.where(present[f].unsqueeze(1), norm(x), torch.zeros_like(x))
                  for f, norm, x in zip(self.names, self.norms, xs)]
        return self.heads(self.drop(torch.cat(normed + [flags], dim=1)))  # [B, sum D_f + M]


class AverageFusion(_Fusion):
    """Tashu et al.'s average: linear projections to ``[B, H]`` averaged over the present
    modalities (0 when none), MLP, level heads."""

    def __init__(self, config, input_dims, level_sizes) -> None:
        super().__init__(config, input_dims, level_sizes)
        self.project = nn.ModuleList(nn.Linear(d, self.hidden) for d in self.dims)
        self.body = nn.Sequential(nn.GELU(), nn.Dropout(self.dropout),
                                  nn.Linear(self.hidden, self.hidden), nn.GELU(),
                                  nn.Dropout(self.dropout))
        self.heads = LevelHeads(self.hidden, level_sizes)

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> list[Tensor]:
        xs = masked_features(features, present, self.names)
        h = torch.stack([proj(x) for proj, x in zip(self.project, xs)], dim=1)  # [B, M, H]
        mask = torch.stack([present[f] for f in self.names], dim=1).unsqueeze(2)  # [B, M, 1]
        mean = (h * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B, H]
        return self.heads(self.body(mean))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``; ``[B, T, H]``."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = mlp(hidden, 2 * hidden, hidden, dropout)

    def forward(self, x: Tensor, padding: Tensor) -> Tensor:
        """``x [B, T, H]``, ``padding`` bool ``[B, T]`` (True = ignore that token)."""
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class AttentionFusion(_Fusion):
    """Modality tokens ``[B, M, H]`` plus a pooling token through self-attention; the pooling
    token (never masked, so a product with no modality stays finite) feeds the level heads."""

    def __init__(self, config, input_dims, level_sizes) -> None:
        super().__init__(config, input_dims, level_sizes)
        self.project = nn.ModuleList(projection(d, self.hidden, self.dropout) for d in self.dims)
        self.modality = nn.Parameter(torch.randn(len(self.names), self.hidden) * 0.02)
        self.pool = nn.Parameter(torch.randn(1, 1, self.hidden) * 0.02)
        self.block = AttentionBlock(self.hidden, config.num_attention_heads, self.dropout)
        self.norm = nn.LayerNorm(self.hidden)
        self.heads = LevelHeads(self.hidden, level_sizes)

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> list[Tensor]:
        xs = masked_features(features, present, self.names)
        tokens = torch.stack([proj(x) for proj, x in zip(self.project, xs)], dim=1)  # [B, M, H]
        tokens = tokens + self.modality  # [B, M, H]
        pool = self.pool.expand(tokens.shape[0], -1, -1)  # [B, 1, H]
        x = torch.cat([pool, tokens], dim=1)  # [B, 1+M, H]
        absent = ~torch.stack([present[f] for f in self.names], dim=1)  # [B, M]
        padding = torch.cat([torch.zeros_like(absent[:, :1]), absent], dim=1)  # [B, 1+M]
        return self.heads(self.norm(self.block(x, padding)[:, 0]))  # [B, H]


class LateFusion(_Fusion):
    """One MLP and level heads per modality; per level, their logits ``[B, M, C_l]`` are fused by
    ``config.late_policy`` (``mean``, ``max`` or ``mlp``) over the present modalities."""

    def __init__(self, config, input_dims, level_sizes) -> None:
        super().__init__(config, input_dims, level_sizes)
        self.policy = config.late_policy
        self.branches = nn.ModuleList(
            nn.Sequential(projection(d, self.hidden, self.dropout), LevelHeads(self.hidden, level_sizes))
            for d in self.dims)
        m = len(self.names)
        self.policy_nets = nn.ModuleList(
            mlp(m * size + m, self.hidden, size, self.dropout) for size in level_sizes
        ) if self.policy == "mlp" else nn.ModuleList()
        for net in self.policy_nets:  # start at the mean policy
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> list[Tensor]:
        xs = masked_features(features, present, self.names)
        per_modality = [branch(x) for branch, x in zip(self.branches, xs)]  # M x L x [B, C_l]
        mask = torch.stack([present[f] for f in self.names], dim=1)  # [B, M]
        out = []
        for level in range(len(per_modality[0])):
            logits = torch.stack([p[level] for p in per_modality], dim=1)  # [B, M, C_l]
            out.append(self._fuse(level, logits, mask))
        return out

    def _fuse(self, level: int, logits: Tensor, mask: Tensor) -> Tensor:
        """``logits [B, M, C_l]``, ``mask`` bool ``[B, M]`` -> ``[B, C_l]`` (0 where none present)."""
        m = mask.unsqueeze(2)  # [B, M, 1]
        any_present = mask.any(dim=1, keepdim=True)  # [B, 1]
        if self.policy == "max":
            best = logits.masked_fill(~m, float("-inf")).amax(dim=1)  # [B, C_l]
            return torch.where(any_present, best, torch.zeros_like(best))
        mean = (logits * m).sum(1) / m.sum(1).clamp(min=1)  # [B, C_l]
        if self.policy == "mean":
            return mean
        probs = torch.softmax(logits, dim=2) * m  # [B, M, C_l]
        policy_in = torch.cat([probs.flatten(1), mask.to(probs.dtype)], dim=1)  # [B, M*C_l + M]
        return mean + self.policy_nets[level](policy_in)
