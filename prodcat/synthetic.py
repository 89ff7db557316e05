"""Synthetic catalogues: a dataset type for smoke tests and demos (no files from ../shared).

Products get titles built from their category's name plus noise words, and small solid-colour
PNG images whose colour depends on the category, so both text and image carry the label signal.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa

from prodcat.catalog.split import split_of
from prodcat.schema import PRODUCT_SCHEMA
from prodcat.taxonomy import Taxonomy

_NOISE = ["classic", "new", "premium", "blue", "red", "cotton", "soft", "large", "mini", "pro"]


def toy_taxonomy() -> Taxonomy:
    """A 3-level tree with leaves at depths 2 and 3 and one label that is also a parent."""
    return Taxonomy.from_paths([
        (1, "Apparel"), (2, "Apparel > Shoes"), (3, "Apparel > Shoes > Boots"),
        (4, "Apparel > Shoes > Sandals"), (5, "Apparel > Shirts"), (6, "Home"),
        (7, "Home > Kitchen"), (8, "Home > Kitchen > Mugs"), (9, "Home > Decor"),
    ], version="toy-1")


def synthetic_products(n: int, taxonomy: Taxonomy | None = None, image_dir: str | Path | None = None,
                       platforms: tuple[str, ...] = ("alpha", "beta"), seed: int = 0,
                       image_size: tuple[int, int] = (32, 32)) -> tuple[pa.Table, Taxonomy]:
    """``n`` products over the leaves of ``taxonomy`` (default :func:`toy_taxonomy`).

    With ``image_dir``, writes one PNG per product (every 7th product has none, to exercise the
    text-only path). Returns the product table (``PRODUCT_SCHEMA``) and the taxonomy used.
    """
    from PIL import Image

    taxonomy = taxonomy or toy_taxonomy()
    rng = np.random.default_rng(seed)
    labels = [int(taxonomy.ids[node]) for node in taxonomy.leaves]
    rows = []
    for i in range(n):
        cid = labels[i % len(labels)]
        platform = platforms[i % len(platforms)]
        name = taxonomy.path_of_id(cid).split(" > ")[-1]
        pid = f"{platform}:{i:06d}"
        image_uri = None
        if image_dir is not None and i % 7 != 6:
            colour = tuple(int(c) for c in np.random.default_rng(cid).integers(0, 255, 3))
            path = Path(image_dir) / f"{platform}_{i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.new("RGB", image_size, colour).save(buf, format="PNG")
            path.write_bytes(buf.getvalue())
            image_uri = str(path)
        words = " ".join(rng.choice(_NOISE, 2))
        rows.append({
            "product_id": pid, "platform": platform, "title": f"{words} {name}",
            "description": f"A {words} {name.lower()} for everyday use.",
            "title_raw": f"{words} {name}", "description_raw": None,
            "image_uri": image_uri, "has_image": image_uri is not None, "brand": None,
            "source_category": name, "category_id": cid, "category_path": taxonomy.path_of_id(cid),
            "split": split_of(pid),
        })
    return pa.Table.from_pylist(rows, schema=PRODUCT_SCHEMA), taxonomy
