"""The PNGs a reviewer looks at: a 2-D UMAP scatter coloured by cluster and by the platforms'
finer labels, and a grid of each proposed subcategory's representative products (image and
title). Drawn with matplotlib through :mod:`prodcat.core.report` (Agg, local path or ``s3://``).
"""

from __future__ import annotations

import io

import numpy as np

from prodcat.core import storage
from prodcat.core.report import figure, save_png
from prodcat.recategorize.config import NOISE

_GREY = (0.82, 0.82, 0.82, 0.5)
THUMB = 96  # px, the longest side of a product thumbnail


def _palette(n: int) -> list:
    import matplotlib  # lazy: matplotlib loads only when a figure is drawn

    cmap = matplotlib.colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _panel(ax, coords: np.ndarray, groups: np.ndarray, names: list[str], title: str,
           max_legend: int) -> None:
    """Scatter ``coords [B, 2]`` coloured by ``groups`` (int, -1 grey) with a legend of
    ``names`` (one per group id, largest first; beyond ``max_legend`` drawn grey as 'other')."""
    ax.scatter(*coords[groups == NOISE].T, s=4, color=_GREY, label=None)
    colours = _palette(min(len(names), max_legend))
    for g, name in enumerate(names):
        rows = groups == g
        colour = colours[g] if g < max_legend else _GREY
        ax.scatter(*coords[rows].T, s=6, color=colour, label=name if g < max_legend else None)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def scatter(coords: np.ndarray, clusters: np.ndarray, cluster_names: list[str], finer: np.ndarray,
            title: str, uri: str, max_legend: int = 20) -> str:
    """Two panels side by side: by cluster (unassigned grey) and by finer label (``finer``:
    ``[B]`` strings such as ``myntra:Casual Shoes``; the ``max_legend`` most frequent coloured).
    Writes the PNG to ``uri`` and returns it."""
    labels, counts = np.unique(np.asarray(finer, str), return_counts=True)
    order = labels[np.argsort(-counts, kind="stable")]
    index = {label: i for i, label in enumerate(order)}
    finer_groups = np.asarray([index[str(f)] for f in finer], np.int64)
    fig, axes = figure(1, 2, figsize=(14, 5.5))
    names = [f"{c}: {n}" for c, n in enumerate(cluster_names)]
    _panel(axes[0], coords, np.asarray(clusters), names,
           f"{title}: {len(cluster_names)} clusters (grey: unassigned)", max_legend)
    _panel(axes[1], coords, finer_groups, [str(x) for x in order],
           f"{title}: the platforms' finer labels ({len(order)})", max_legend)
    fig.tight_layout()
    return save_png(fig, uri)


def _thumbnail(image_uri: str | None) -> np.ndarray | None:
    """The product image as an RGB array, longest side :data:`THUMB` px; None when unreadable."""
    from PIL import Image  # lazy: Pillow loads only when a grid is drawn

    if not image_uri:
        return None
    try:
        with Image.open(io.BytesIO(storage.read_bytes(image_uri))) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB, THUMB))
            return np.asarray(img)
    except (OSError, ValueError):
        return None


def example_grid(titles: list[str], image_uris: list[str | None], title: str, uri: str,
                 columns: int = 8) -> str:
    """A grid of products (image above a shortened title; "no image" when there is none or it
    cannot be read). Writes the PNG to ``uri`` and returns it."""
    n = max(len(titles), 1)
    rows = (n + columns - 1) // columns
    fig, axes = figure(rows, columns, figsize=(1.6 * columns, 1.9 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(titles):
            continue
        thumb = _thumbnail(image_uris[k])
        if thumb is None:
            ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7, color="grey")
        else:
            ax.imshow(thumb)
        text = titles[k] if len(titles[k]) <= 26 else titles[k][:25] + "…"
        ax.set_title(text, fontsize=6)
    fig.suptitle(title, fontsize=9)
    return save_png(fig, uri, dpi=100)
