"""Reviewing proposals and extending the taxonomy with the accepted ones.

The workflow (README "Recategorization"):

1. ``prodcat recategorize propose`` writes ``accept.yaml`` beside its report: one entry per
   proposed subcategory with ``accept: false`` and the suggested ``name`` (plus its size,
   platforms, terms and the platforms' labels inside it, for reading; ``apply`` ignores those).
2. A person reads ``report.md`` and edits ``accept.yaml``: ``accept: true`` for each
   subcategory to add, ``name`` as it should appear in the taxonomy. Clusters of one category
   given the same name become one node (a way to merge).
3. ``prodcat recategorize apply`` writes a new catalogue folder: ``taxonomy.json``
   (:meth:`prodcat.core.taxonomy.Taxonomy.extend`: the accepted subcategories as new child nodes
   with ids from :data:`~prodcat.core.taxonomy.EXTENSION_ID_BASE` up, so never a Google id; a new
   version with the old → new id map), ``products.parquet`` (the products of accepted clusters
   relabelled to their new node; every other row unchanged) and ``extension.{json,md}``.
   ``prodcat train --products <new folder>/products.parquet`` then trains on the extended
   taxonomy with the same embedding store.

``apply`` refuses a review written for other proposals (each category's ``proposals``
fingerprint must match ``recategorize.json``) and a product table on another taxonomy version.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import Field

from prodcat.core import storage
from prodcat.core.config import StrictModel, load_config
from prodcat.core.console import say
from prodcat.core.report import markdown_table
from prodcat.core.taxonomy import Taxonomy
from prodcat.train.features import load_taxonomy

ACCEPT_FILE = "accept.yaml"
SUMMARY = "recategorize.json"  # written by prodcat.recategorize.propose
_HEADER = """\
# Review file of `prodcat recategorize propose` (see report.md beside it).
# For each proposed subcategory: set `accept: true` to add it to the taxonomy as a child of its
# category, and edit `name` (clusters of one category with the same name become one node).
# size, platforms, terms and finer_labels are for reading; `apply` ignores them.
# Then: prodcat recategorize apply --proposals <this folder> --output <new catalogue folder>
"""


class ReviewedCluster(StrictModel):
    """One proposed subcategory in the review file."""

    cluster: int = Field(description="cluster id in the proposals")
    accept: bool = Field(False, description="add it to the taxonomy")
    name: str = Field(description="node name (suggested by c-TF-IDF; edit freely)")
    size: int | None = Field(None, description="products (for reading)")
    platforms: dict[str, int] = Field(default_factory=dict, description="products per platform")
    terms: list[str] = Field(default_factory=list, description="c-TF-IDF terms (for reading)")
    finer_labels: dict[str, int] = Field(default_factory=dict,
                                         description="largest platform labels inside (for reading)")


class ReviewedCategory(StrictModel):
    """One recategorized category in the review file."""

    category_id: int
    path: str
    proposals: str = Field(description="fingerprint of the proposals this review is for")
    clusters: list[ReviewedCluster]


class AcceptFile(StrictModel):
    """``accept.yaml``."""

    taxonomy_version: str = Field(description="the taxonomy the proposals were made on")
    categories: list[ReviewedCategory]


class ApplyConfig(StrictModel):
    """``prodcat recategorize apply``."""

    proposals: str = Field(description="folder written by `prodcat recategorize propose`")
    accept: str | None = Field(None, description="reviewed accept.yaml (default: in the proposals folder)")
    products: str | None = Field(None, description="product table to relabel (default: the one proposed on)")
    taxonomy: str | None = Field(None, description="its taxonomy.json (default: beside it)")
    output: str = Field(description="new catalogue folder: products.parquet, taxonomy.json, extension.*")
    version: str | None = Field(None, description="version tag of the extended taxonomy "
                                "(default <old>+ext-<hash>)")


def write_accept_template(output: str, summary: dict) -> str:
    """Write ``<output>/accept.yaml`` (every cluster ``accept: false``) from a proposals summary;
    an existing review file is kept as ``accept.previous.yaml``. Returns its location."""
    doc = {"taxonomy_version": summary["taxonomy_version"], "categories": [{
        "category_id": e["category_id"], "path": e["path"], "proposals": e["fingerprint"],
        "clusters": [{"cluster": c["cluster"], "accept": False, "name": c["name"], "size": c["size"],
                      "platforms": c["platforms"], "terms": c["terms"],
                      "finer_labels": dict(list(c["label_mix"].items())[:3])}
                     for c in e["clusters"]]} for e in summary["categories"]]}
    AcceptFile.model_validate(doc)
    uri = storage.join(output, ACCEPT_FILE)
    if storage.exists(uri):
        storage.write_text(storage.join(output, "accept.previous.yaml"), storage.read_text(uri))
        say(f"[recategorize] the earlier {ACCEPT_FILE} was kept as accept.previous.yaml")
    storage.write_text(uri, _HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
    return uri


def _accepted(review: AcceptFile, summary: dict, proposals: str) -> tuple[list[tuple[int, str]], list[dict]]:
    """The ``(parent id, name)`` children to add and, per child, the product ids and clusters.

    Raises:
        ValueError: for a stale review, an unknown category or cluster, or nothing accepted.
    """
    entries = {e["category_id"]: e for e in summary["categories"]}
    children, groups = [], []
    for category in review.categories:
        entry = entries.get(category.category_id)
        if entry is None:
            raise ValueError(f"category {category.category_id} is not in {proposals}/{SUMMARY}")
        if category.proposals != entry["fingerprint"]:
            raise ValueError(f"the review of {category.path} was written for other proposals "
                             f"({category.proposals}, now {entry['fingerprint']}): review the new "
                             f"{ACCEPT_FILE} again")
        known = {c["cluster"] for c in entry["clusters"]}
        accepted = [c for c in category.clusters if c.accept]
        unknown = sorted({c.cluster for c in accepted} - known)
        if unknown:
            raise ValueError(f"{category.path}: clusters {unknown} are not in the proposals")
        if not accepted:
            continue
        table = storage.read_table(storage.join(proposals, entry["assignments"]),
                                   columns=["product_id", "cluster"])
        pids, clusters = np.asarray(table["product_id"].to_pylist(), object), table["cluster"].to_numpy()
        by_name: dict[str, list[ReviewedCluster]] = {}
        for c in accepted:
            by_name.setdefault(c.name.strip().casefold(), []).append(c)
        for same in by_name.values():
            ids = [c.cluster for c in same]
            children.append((category.category_id, same[0].name.strip()))
            groups.append({"parent_id": category.category_id, "clusters": ids,
                           "product_ids": pids[np.isin(clusters, ids)].tolist()})
    if not children:
        raise ValueError(f"no subcategory is accepted in the review file: set `accept: true` on "
                         f"the clusters to add ({ACCEPT_FILE})")
    return children, groups


def relabel(products: pa.Table, taxonomy: Taxonomy, groups: list[dict]) -> tuple[pa.Table, dict]:
    """Products of each group → its ``new_id`` (only where the row is still in ``parent_id``);
    ``category_path`` follows. Returns the table (same schema and metadata) and counts."""
    target: dict[str, tuple[int, int]] = {}
    for g in groups:
        for pid in g["product_ids"]:
            target[pid] = (g["parent_id"], g["new_id"])
    ids = products["product_id"].to_pylist()
    cids = products["category_id"].to_pylist()
    paths = products["category_path"].to_pylist()
    moved = elsewhere = 0
    for i, pid in enumerate(ids):
        if pid not in target:
            continue
        parent, new = target[pid]
        if cids[i] != parent:
            elsewhere += 1
            continue
        cids[i], paths[i] = new, taxonomy.path_of_id(new)
        moved += 1
    missing = len(target) - moved - elsewhere
    table = products.set_column(products.schema.get_field_index("category_id"),
                                products.schema.field("category_id"), pa.array(cids, pa.int64()))
    table = table.set_column(table.schema.get_field_index("category_path"),
                             table.schema.field("category_path"), pa.array(paths, pa.string()))
    return table, {"relabelled": moved, "no_longer_in_parent": elsewhere, "not_in_table": missing}


def apply_extension(config: ApplyConfig) -> dict:
    """Extend the taxonomy with the accepted subcategories and relabel the product table.

    Returns ``extension.json``'s content.

    Raises:
        ValueError: for a stale or empty review, a taxonomy version other than the proposals',
            or an output folder equal to the product table's.
        FileNotFoundError: when the proposals, review file or product table is missing.
    """
    summary = json.loads(storage.read_text(storage.join(config.proposals, SUMMARY)))
    review = load_config(AcceptFile, config.accept or storage.join(config.proposals, ACCEPT_FILE))
    products_uri = config.products or summary["config"]["products"]
    taxonomy = load_taxonomy(products_uri, config.taxonomy or summary["config"].get("taxonomy"))
    if taxonomy.version != review.taxonomy_version or taxonomy.version != summary["taxonomy_version"]:
        raise ValueError(f"the product table's taxonomy is {taxonomy.version}; the proposals were "
                         f"made on {summary['taxonomy_version']} and reviewed on {review.taxonomy_version}")
    if storage.join(config.output, "products.parquet").rstrip("/") == products_uri.rstrip("/"):
        raise ValueError("--output must be a new folder: the source product table is not overwritten")
    children, groups = _accepted(review, summary, config.proposals)
    extended = taxonomy.extend(children, version=config.version)
    for k, g in enumerate(groups):
        g["new_id"] = int(extended.ids[len(taxonomy) + k])  # extend() appends in the given order
    products = storage.read_table(products_uri)
    table, counts = relabel(products, extended, groups)
    storage.write_table(table, storage.join(config.output, "products.parquet"))
    storage.write_text(storage.join(config.output, "taxonomy.json"), extended.to_json())
    result = {"previous_version": taxonomy.version, "version": extended.version,
              "products": table.num_rows, **counts,
              "nodes": [{"id": g["new_id"], "path": extended.path_of_id(g["new_id"]),
                         "parent_id": g["parent_id"], "clusters": g["clusters"],
                         "products": int(pc.sum(pc.equal(table["category_id"], g["new_id"])).as_py() or 0)}
                        for g in groups]}
    storage.write_text(storage.join(config.output, "extension.json"), json.dumps(result, indent=2))
    storage.write_text(storage.join(config.output, "extension.md"), _markdown(result))
    say(f"[recategorize] taxonomy {taxonomy.version} → {extended.version}: {len(groups)} new "
        f"node(s), {counts['relabelled']:,} products relabelled → {config.output}")
    return result


def _markdown(result: dict) -> str:
    return "\n".join([
        "# Taxonomy extension", "",
        f"{result['previous_version']} → **{result['version']}**: {len(result['nodes'])} new nodes; "
        f"{result['relabelled']:,} of {result['products']:,} products relabelled"
        + (f" ({result['no_longer_in_parent']:,} proposed products were no longer in their "
           f"category and were left alone)" if result["no_longer_in_parent"] else "")
        + (f"; {result['not_in_table']:,} proposed products are not in this table"
           if result["not_in_table"] else "") + ".", "",
        markdown_table(["new id", "path", "from clusters", "products"],
                       [[n["id"], n["path"], ", ".join(map(str, n["clusters"])), n["products"]]
                        for n in result["nodes"]]), "",
        "Every category id of the previous version keeps its id (the map is in `taxonomy.json`, "
        "`lineage`); a prediction made under it stays valid here, one level coarser where its "
        "category gained subcategories.", ""])


def map_predictions(predictions: pa.Table, taxonomy: Taxonomy, from_version: str) -> pa.Table:
    """Predictions made under ``from_version`` → the same table with ``category_id`` and
    ``category_path`` in ``taxonomy`` (rows with a null ``category_id``, i.e. an error, unchanged).

    Raises:
        KeyError: when ``taxonomy`` does not descend from ``from_version`` or an id is unknown.
    """
    cids = predictions["category_id"]
    valid = np.asarray(pc.is_valid(cids).to_numpy(zero_copy_only=False), bool)
    old = np.asarray(cids.fill_null(0).to_numpy(), np.int64)
    new = old.copy()
    new[valid] = taxonomy.map_from(from_version, old[valid])
    paths = [taxonomy.path_of_id(int(c)) if ok else p
             for c, ok, p in zip(new, valid, predictions["category_path"].to_pylist())]
    out = predictions.set_column(predictions.schema.get_field_index("category_id"), "category_id",
                                 pa.array(np.where(valid, new, 0), pa.int64(), mask=~valid))
    return out.set_column(out.schema.get_field_index("category_path"), "category_path",
                          pa.array(paths, pa.string()))
