"""A category's products with their stored embeddings and their platforms' finer labels.

The reference for scoring is each platform's own finer category, which the product table already
holds: ``source_category`` is the platform's path (Myntra ``masterCategory > subCategory >
articleType``, H&M ``product_group_name > product_type_name``, Flipkart the first three levels of
its category tree; ``prodcat/catalog/platforms/*.yaml``), and the Google category is mapped from
a prefix of it. Within one Google category, the source paths of one platform are its finer
labels, so no new column is needed. Letters: B products, D_f dimension of feature f.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodcat.core import storage
from prodcat.core.taxonomy import Taxonomy
from prodcat.recategorize.config import RecategorizeConfig
from prodcat.recategorize.reduce import MIN_PRODUCTS
from prodcat.train.features import FeatureTable, join_features, load_taxonomy, read_store

PRODUCT_COLUMNS = ["product_id", "platform", "split", "group_id", "title", "description", "brand",
                   "image_uri", "source_category", "category_id"]


@dataclass
class CategoryData:
    """One category's products (rows aligned across the arrays).

    Attributes:
        category_id, path: the category.
        product_id, platform, finer_label, title, brand, image_uri: ``[B]`` object arrays
            (``finer_label`` is the product's ``source_category``; brand and image may be None).
        features: ``{f: [B, D_f]}`` float32, zeros where missing; ``present``: ``{f: [B]}`` bool.
        not_embedded: products of the category without a row in the store (left out).
        capped: products left out by ``max_products_per_platform``.
    """

    category_id: int
    path: str
    product_id: np.ndarray
    platform: np.ndarray
    finer_label: np.ndarray
    title: np.ndarray
    brand: np.ndarray
    image_uri: np.ndarray
    features: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    not_embedded: int = 0
    capped: int = 0

    def __len__(self) -> int:
        return len(self.product_id)


def resolve_categories(requested: list[int | str], taxonomy: Taxonomy) -> list[int]:
    """Category ids from ids or ``" > "`` paths.

    Raises:
        KeyError: for an id or path that is not in the taxonomy.
    """
    out = []
    for item in requested:
        if isinstance(item, int) or str(item).strip().isdigit():
            cid = int(item)
            taxonomy.node(cid)  # raises KeyError naming the taxonomy version
        else:
            cid = taxonomy.id_for_path(str(item))
        if cid not in out:
            out.append(cid)
    return out


def _cap(table: pa.Table, limit: int | None) -> pa.Table:
    """At most ``limit`` rows per platform, chosen by a hash of ``product_id`` (deterministic)."""
    if limit is None:
        return table
    keep = []
    ids, platforms = table["product_id"].to_pylist(), table["platform"].to_pylist()
    by_platform: dict[str, list[int]] = {}
    for i, p in enumerate(platforms):
        by_platform.setdefault(p, []).append(i)
    for rows in by_platform.values():
        rows.sort(key=lambda i: hashlib.sha1(f"recategorize:{ids[i]}".encode()).digest())
        keep += rows[:limit]
    return table.take(pa.array(sorted(keep), pa.int64()))


def load_categories(config: RecategorizeConfig) -> tuple[list[CategoryData], Taxonomy, list[dict]]:
    """The categories of ``config`` with their embedded products.

    Returns:
        ``(categories, taxonomy, skipped)``; ``skipped`` lists each requested category left out
        and why (fewer than ``MIN_PRODUCTS`` embedded products), or, when every category is
        considered, how many were below ``min_products``.

    Raises:
        FileNotFoundError: when the product table, taxonomy or store is missing.
        KeyError: for an unknown category or a feature that is not in the store.
    """
    taxonomy = load_taxonomy(config.products, config.taxonomy)
    products = storage.read_table(config.products, columns=PRODUCT_COLUMNS)
    products = products.filter(pc.is_valid(products["category_id"]))
    store, manifest = read_store(config.embeddings, ["product_id"] + [
        c for f in config.features for c in (f"emb_{f}", f"status_{f}")])
    embedded = pc.is_in(products["product_id"], value_set=store["product_id"])
    counts = pc.value_counts(products.filter(embedded)["category_id"]).to_pylist()
    n_embedded = {int(c["values"]): int(c["counts"]) for c in counts}
    skipped: list[dict] = []
    if config.categories:
        wanted = resolve_categories(config.categories, taxonomy)
        for cid in [c for c in wanted if n_embedded.get(c, 0) < MIN_PRODUCTS]:
            skipped.append({"category_id": cid, "path": taxonomy.path_of_id(cid),
                            "reason": f"{n_embedded.get(cid, 0)} embedded products (< {MIN_PRODUCTS})"})
        wanted = [c for c in wanted if n_embedded.get(c, 0) >= MIN_PRODUCTS]
    else:
        wanted = sorted((c for c, n in n_embedded.items() if n >= config.min_products),
                        key=lambda c: -n_embedded[c])
        small = len(n_embedded) - len(wanted)
        if small:
            skipped.append({"category_id": None, "path": f"{small} categories",
                            "reason": f"fewer than min_products={config.min_products} embedded products"})
    out = []
    for cid in wanted:
        rows = products.filter(pc.equal(products["category_id"], cid))
        out.append(_category(cid, rows, store, manifest, taxonomy, config))
    return out, taxonomy, skipped


def _category(cid: int, rows: pa.Table, store: pa.Table, manifest: dict, taxonomy: Taxonomy,
              config: RecategorizeConfig) -> CategoryData:
    in_store = pc.is_in(rows["product_id"], value_set=store["product_id"])
    not_embedded = rows.num_rows - int(pc.sum(in_store).as_py() or 0)
    rows = rows.filter(in_store)
    capped_rows = _cap(rows, config.max_products_per_platform)
    features = join_features(capped_rows, store, config.features, taxonomy)
    if features["product_id"].to_pylist() != capped_rows["product_id"].to_pylist():
        raise RuntimeError(f"category {cid}: the store join changed the row order")  # never expected
    table = FeatureTable(features, list(config.features),
                         {f: store.schema.field(f"emb_{f}").type.list_size for f in config.features},
                         taxonomy, manifest)
    x, present, _ = table.arrays()

    def column(name: str) -> np.ndarray:
        return np.asarray(capped_rows[name].to_pylist(), dtype=object)

    return CategoryData(cid, taxonomy.path_of_id(cid), column("product_id"), column("platform"),
                        column("source_category"), column("title"), column("brand"),
                        column("image_uri"), x, present, not_embedded,
                        rows.num_rows - capped_rows.num_rows)
