"""SimCLR on stored embeddings: a projection network trained with NT-Xent on two augmented views.

SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020) learns a representation ``h = f(x)`` by pulling two augmented views of the same item
together and pushing the other ``2(B-1)`` items of the batch away, through a projection head
``z = g(h)``; the representation ``h`` (before the head) is what downstream tasks use. Here the
items are products and ``x`` their frozen encoder embeddings (one L2-normalised block per
modality, concatenated), so the augmentations act on vectors, not pixels:

- *feature dropout*: each dimension zeroed with probability ``feature_dropout``;
- *Gaussian noise*: ``noise_std`` times the block's RMS per dimension (``1/sqrt(D_f)``);
- *modality dropout*: a whole modality zeroed with probability ``modality_dropout`` (a product
  always keeps one of the modalities it has), so text and image views of a product must agree.

Letters: B products, D input dimension (sum of D_f), H representation, P projection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prodcat.recategorize.config import SimCLRSettings


@dataclass
class Inputs:
    """Concatenated, L2-normalised modality blocks.

    Attributes:
        x: ``[B, D]`` float32, zeros where a modality is missing.
        present: ``[B, M]`` bool, True where modality m is present.
        slices: per modality ``(name, start, stop)`` columns of ``x``.
    """

    x: np.ndarray
    present: np.ndarray
    slices: list[tuple[str, int, int]]


def make_inputs(features: dict[str, np.ndarray], present: dict[str, np.ndarray],
                groups: np.ndarray | None = None) -> Inputs:
    """``{f: [B, D_f]}`` and ``{f: [B] bool}`` → :class:`Inputs` (blocks in the dict's order).

    With ``groups`` (``[B]``, e.g. the platform), each block is centred on its group's mean
    (over the rows where it is present) and normalised again: what all of a platform's products
    share (its photo style, its way of writing titles) is removed, so products of one kind from
    two platforms can meet. The group is metadata, never a reference label.

    Raises:
        ValueError: when no feature is given or the row counts differ.
    """
    if not features:
        raise ValueError("make_inputs needs at least one feature")
    sizes = {len(v) for v in features.values()} | {len(v) for v in present.values()}
    if len(sizes) != 1:
        raise ValueError(f"features and present masks have different row counts: {sorted(sizes)}")
    blocks, masks, slices, start = [], [], [], 0
    for name, values in features.items():
        values = np.asarray(values, np.float32)
        finite = np.isfinite(values).all(axis=1)
        values = np.where(finite[:, None], values, 0.0)
        mask = np.asarray(present[name], bool) & finite & (np.linalg.norm(values, axis=1) > 0)
        block = _unit(np.where(mask[:, None], values, 0.0))
        if groups is not None:
            block = _unit(block - _group_means(block, mask, np.asarray(groups)))
        blocks.append(np.where(mask[:, None], block, 0.0).astype(np.float32))
        masks.append(mask)
        slices.append((name, start, start + values.shape[1]))
        start += values.shape[1]
    return Inputs(np.concatenate(blocks, axis=1), np.stack(masks, axis=1), slices)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _group_means(block: np.ndarray, mask: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[B, D_f]``: per row, the mean of its group's present rows (zeros for a group without any)."""
    out = np.zeros_like(block)
    for g in np.unique(groups):
        rows = groups == g
        if (rows & mask).any():
            out[rows] = block[rows & mask].mean(axis=0)
    return out


class ProjectionNet(nn.Module):
    """``f``: an MLP encoder ``[B, D] → [B, H]`` (the representation); ``g``: the projection head
    ``[B, H] → [B, P]`` that NT-Xent is computed on (SimCLR's non-linear head)."""

    def __init__(self, input_dim: int, settings: SimCLRSettings) -> None:
        super().__init__()
        hidden = settings.hidden_dim
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                     nn.Linear(hidden, settings.representation_dim))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(settings.representation_dim, hidden // 2),
                                  nn.ReLU(), nn.Linear(hidden // 2, settings.projection_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, D]`` → ``(h [B, H], z [B, P])``."""
        h = self.encoder(x)
        return h, self.head(h)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """SimCLR's normalized-temperature cross-entropy over a batch of ``B`` positive pairs.

    Each of the ``2B`` views must pick its partner among the other ``2B - 1`` by cosine
    similarity divided by ``temperature``.

    Args:
        z1, z2: ``[B, P]`` projections of the two views (row i of each is product i).

    Returns:
        ``{"nt_xent_loss": scalar, "loss": the same, "pair_accuracy": share of views whose most
        similar other view is their partner}``.
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2B, P]
    sim = z @ z.T / temperature  # [2B, 2B]
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    loss = F.cross_entropy(sim, partner)
    accuracy = (sim.argmax(dim=1) == partner).float().mean()
    return {"nt_xent_loss": loss, "loss": loss, "pair_accuracy": accuracy.detach()}


def augment(x: torch.Tensor, present: torch.Tensor, slices: list[tuple[str, int, int]],
            settings: SimCLRSettings, generator: torch.Generator) -> torch.Tensor:
    """One random view of ``x [B, D]`` (``present [B, M]`` bool): modality dropout, feature
    dropout, Gaussian noise (see the module docstring). Missing modalities stay zero."""
    b, m = present.shape
    drop = (torch.rand(b, m, generator=generator) < settings.modality_dropout) & present
    keep = present & ~drop
    lost = ~keep.any(dim=1) & present.any(dim=1)  # would lose everything: keep one present at random
    if lost.any():
        scores = torch.rand(b, m, generator=generator).masked_fill(~present, -1.0)
        choice = scores.argmax(dim=1)
        keep[lost, choice[lost]] = True
    view = x.clone()
    for k, (_, start, stop) in enumerate(slices):
        block = view[:, start:stop]
        if settings.feature_dropout > 0:
            mask = torch.rand(block.shape, generator=generator) >= settings.feature_dropout
            block = block * mask / (1 - settings.feature_dropout)
        if settings.noise_std > 0:
            block = block + torch.randn(block.shape, generator=generator) * (
                settings.noise_std / (stop - start) ** 0.5)
        view[:, start:stop] = block * keep[:, k:k + 1]
    return view


@dataclass
class SimCLRResult:
    """Attributes: representation ``[B, H]`` float32 (eval mode, clean inputs), per-epoch mean
    ``losses``, the last epoch's ``pair_accuracy`` (in [0, 1]) and the training ``seconds``."""

    representation: np.ndarray
    losses: list[float]
    pair_accuracy: float
    seconds: float


def train_simclr(inputs: Inputs, settings: SimCLRSettings) -> SimCLRResult:
    """Train :class:`ProjectionNet` with :func:`nt_xent` on ``inputs``; return ``h`` for all rows.

    Batches are shuffled each epoch; a last batch smaller than 4 products is dropped (NT-Xent
    needs negatives). Uses ``settings.torch_threads`` intra-op threads, CPU.

    Raises:
        ValueError: with fewer than 8 products.
    """
    n = len(inputs.x)
    if n < 8:
        raise ValueError(f"SimCLR needs at least 8 products, got {n}")
    torch.set_num_threads(settings.torch_threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    x = torch.from_numpy(inputs.x)
    present = torch.from_numpy(inputs.present)
    model = ProjectionNet(x.shape[1], settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    batch = min(settings.batch_size, n)
    losses, accuracy, start = [], 0.0, time.perf_counter()
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        total, steps, correct = 0.0, 0, []
        for i in range(0, n, batch):
            rows = order[i:i + batch]
            if len(rows) < 4:
                continue
            v1 = augment(x[rows], present[rows], inputs.slices, settings, generator)
            v2 = augment(x[rows], present[rows], inputs.slices, settings, generator)
            terms = nt_xent(model(v1)[1], model(v2)[1], settings.temperature)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            total, steps = total + float(terms["loss"].detach()), steps + 1
            correct.append(float(terms["pair_accuracy"]))
        losses.append(total / max(steps, 1))
        accuracy = float(np.mean(correct)) if correct else 0.0
    model.eval()
    with torch.no_grad():
        h = model(x)[0].numpy().astype(np.float32)
    return SimCLRResult(h, losses, accuracy, time.perf_counter() - start)
