"""``prodcat catalog build``: platform exports → product table, rejects, taxonomy, summary.

Output folder (local or ``s3://``):
- ``products.parquet``: the product table (DESIGN.md contract; schema ``prodcat.core.schema``), with the
  split protocol and leave-one-platform-out folds in the Parquet metadata (key ``prodcat``).
- ``rejects.parquet``: every record that was read and not accepted, with a reason.
- ``taxonomy.json``: the unified taxonomy actually used (Google sub-tree, truncated).
- ``build_summary.json`` / ``build_summary.md``: per platform, accepted + rejected = read.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from typing import Callable

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import Field, field_validator

from prodcat.catalog.adapter import AdapterConfig, Reject, builtin_platforms, load_adapter, read_products
from prodcat.catalog.groups import KEYS, assign_groups, cross_split_pairs, group_summary, image_hashes
from prodcat.catalog.mapping import CategoryMapping, UnknownCategories
from prodcat.catalog.review import check_fresh
from prodcat.catalog.split import FRACTIONS, leave_one_platform_out, split_of
from prodcat.core import storage
from prodcat.core.config import StrictModel
from prodcat.core.console import say
from prodcat.core.report import markdown_table
from prodcat.core.schema import PRODUCT_SCHEMA, REJECT_SCHEMA, SPLIT_VERSION, SPLITS
from prodcat.core.taxonomy import Taxonomy, load_google_taxonomy


class BuildConfig(StrictModel):
    """Settings of a catalogue build."""

    platforms: list[str] = Field(default_factory=builtin_platforms,
                                 description="built-in platform names or adapter config files")
    output: str = Field("runs/catalog", description="output folder, local or s3://")
    taxonomy: str | None = Field(None, description="Google taxonomy file; default: the shared one")
    max_depth: int | None = Field(4, ge=1, description="truncate categories deeper than this")
    split_fractions: tuple[float, float, float, float] = Field(
        FRACTIONS, description="train/val/calib/test shares of the near-duplicate groups (each >= 0, "
        "summing to 1)")

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float, float]):
        # checked here, before any platform is read or image hashed (split_of checks it again)
        if min(value) < 0 or abs(sum(value) - 1.0) > 1e-9:
            raise ValueError(f"split_fractions must be four shares >= 0 summing to 1, got {value}")
        return value
    group_images: bool = Field(True, description="also group near-identical images (perceptual "
                               "hash of every image: about 1 ms per image)")
    split_seed: str = Field("prodcat", description="salt of the split hash")
    sample_per_category: int | None = Field(
        None, ge=1, description="stratified sample: keep at most this many products per "
        "(platform, category), chosen by hash (deterministic); None keeps all")
    check_images: bool = Field(True, description="flag products whose image file is missing")


def _image_exists(uris: list[str]) -> list[bool]:
    """Existence of many image files, batched per filesystem (one listing call on S3)."""
    out = [False] * len(uris)
    by_fs: dict[bool, list[int]] = defaultdict(list)
    for i, uri in enumerate(uris):
        by_fs[storage.is_remote(uri)].append(i)
    for remote, indices in by_fs.items():
        if not indices:
            continue
        fs, _ = storage.filesystem(uris[indices[0]])
        paths = [storage.filesystem(uris[i])[1] for i in indices]
        for i, info in zip(indices, fs.get_file_info(paths)):
            out[i] = info.type == pafs.FileType.File
    return out


def _sample(rows: list[dict], per_category: int, seed: str) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["platform"], row["category_id"])].append(row)
    kept = []
    for members in groups.values():
        members.sort(key=lambda r: hashlib.sha1(f"{seed}:sample:{r['product_id']}".encode()).digest())
        kept += members[:per_category]
    return sorted(kept, key=lambda r: r["product_id"])


def _build_platform(adapter: AdapterConfig, google: Taxonomy, config: BuildConfig,
                    seen_ids: set[str]) -> tuple[list[dict], list[Reject], dict]:
    mapping = None
    if adapter.mapping == "builtin":
        mapping = CategoryMapping.for_platform(adapter.platform)
    elif adapter.mapping:
        mapping = CategoryMapping.load(adapter.mapping)   # refuses unreviewed suggestions
    problems = mapping.problems(google) if mapping else []
    if problems:
        raise UnknownCategories(f"{adapter.mapping or adapter.platform}: category ids the taxonomy "
                         f"{google.version} does not hold or whose path disagrees with it: "
                         + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
    rows, rejects, read = [], [], 0
    source_categories: Counter = Counter()
    for item in read_products(adapter):
        read += 1
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        source_categories[item["source_category"]] += 1
        if item["product_id"] in seen_ids:
            rejects.append(Reject(adapter.platform, item["product_id"].split(":", 1)[1], "",
                                  "duplicate_id", f"{item['product_id']} was already accepted",
                                  json.dumps(item, ensure_ascii=False)))
            continue
        item["category_id"], item["category_path"] = None, None
        if mapping is not None:
            res = mapping.resolve(item["source_category"])
            if res.unmapped or res.excluded:
                reason = "excluded_category" if res.excluded else "unmapped_category"
                detail = res.excluded or f"no mapping for {item['source_category']!r}"
                rejects.append(Reject(adapter.platform, item["product_id"].split(":", 1)[1], "",
                                      reason, detail, json.dumps(item, ensure_ascii=False)))
                continue
            cid = google.truncate(res.category_id, config.max_depth)
            item["category_id"], item["category_path"] = cid, google.path_of_id(cid)
        seen_ids.add(item["product_id"])
        rows.append(item)
    if mapping is not None and mapping.suggested:     # a reviewed suggestion: made for this export?
        check_fresh(mapping.suggested, source_categories, str(adapter.mapping))
    named = [r["image_uri"] for r in rows]
    exists = (_image_exists([u for u in named if u]) if config.check_images
              else [True] * sum(1 for u in named if u))
    it = iter(exists)
    missing_file = 0
    for row in rows:
        ok = bool(row["image_uri"]) and next(it)
        if row["image_uri"] and not ok:
            missing_file += 1
            row["image_uri"] = None
        row["has_image"] = ok
    summary = {
        "read": read,
        "accepted": len(rows),
        "rejected": len(rejects),
        "rejected_by_reason": dict(Counter(r.reason for r in rejects)),
        "source_categories": len(source_categories),
        "source_categories_mapped": (sum(1 for c in source_categories
                                         if mapping.resolve(c).category_id is not None)
                                     if mapping else 0),
        "source_categories_excluded": (sum(1 for c in source_categories if mapping.resolve(c).excluded)
                                       if mapping else 0),
        "google_categories_used": len({r["category_id"] for r in rows if r["category_id"] is not None}),
        "without_image": sum(1 for r in rows if not r["has_image"]),
        "image_named_but_missing": missing_file,
    }
    return rows, rejects, summary


def _taxonomy_summary(taxonomy: Taxonomy, rows: list[dict]) -> dict:
    platforms_of: dict[int, set[str]] = defaultdict(set)
    for row in rows:
        if row["category_id"] is not None:
            platforms_of[row["category_id"]].add(row["platform"])
    shared = sorted((cid for cid, ps in platforms_of.items() if len(ps) >= 2),
                    key=lambda c: taxonomy.path_of_id(c))
    counts = Counter(r["category_id"] for r in rows)
    return {
        "version": taxonomy.version,
        "nodes": len(taxonomy) - 1,
        "nodes_per_level": taxonomy.level_sizes,
        "leaves": len(taxonomy.leaves),
        "virtual_leaves": int(taxonomy.virtual.sum()),
        "label_categories": len(platforms_of),
        "cross_platform_categories": [
            {"category_id": c, "path": taxonomy.path_of_id(c), "platforms": sorted(platforms_of[c]),
             "products": counts[c]} for c in shared],
    }


def _assign_splits(rows: list[dict], config: BuildConfig, progress: Callable[[str], None]) -> dict:
    """Group near-duplicates and give every row its group's split (before any sampling, so a
    sample keeps the splits of the whole catalogue); returns the grouping summary with the
    cross-split duplicate pairs under product-id splits (before) and group splits (after)."""
    t0 = time.perf_counter()
    hashes = (image_hashes([r["image_uri"] if r["has_image"] else None for r in rows])
              if config.group_images else [None] * len(rows))
    for row, h in zip(rows, hashes):
        row["image_hash"] = h
    group_of = assign_groups(rows)
    for row, gid in zip(rows, group_of):
        row["group_id"] = gid
        row["split"] = split_of(gid, config.split_fractions, config.split_seed)
    before = cross_split_pairs(rows, [split_of(r["product_id"], config.split_fractions,
                                               config.split_seed) for r in rows])
    after = cross_split_pairs(rows, [r["split"] for r in rows])
    summary = {"per_platform": group_summary(rows, group_of),
               "cross_split_pairs": {"by_product_id": before, "by_group": after},
               "images_hashed": sum(h is not None for h in hashes),
               "seconds": round(time.perf_counter() - t0, 2)}
    progress(f"[catalog] {len(set(group_of)):,} near-duplicate groups over {len(rows):,} products "
             f"({summary['images_hashed']:,} images hashed, {summary['seconds']} s); cross-split "
             f"duplicate pairs: {sum(sum(v.values()) for v in before.values()):,} with product-id "
             f"splits, {sum(sum(v.values()) for v in after.values()):,} with group splits")
    return summary


def build_catalog(config: BuildConfig, progress: Callable[[str], None] = say) -> dict:
    """Run the build; returns the summary dict (also written as JSON and Markdown).

    Raises:
        KeyError: for an unknown platform name; FileNotFoundError: for a missing export.
        prodcat.catalog.mapping.UnreviewedMapping: a mapping with suggestions nobody accepted.
        prodcat.catalog.review.StaleSuggestions: a reviewed mapping suggested for another version
            of the export (its source categories changed).
        prodcat.catalog.mapping.UnknownCategories: a mapping naming ids the taxonomy does not hold.
    """
    start = time.perf_counter()
    google = load_google_taxonomy(config.taxonomy)
    rows: list[dict] = []
    rejects: list[Reject] = []
    per_platform: dict[str, dict] = {}
    seen: set[str] = set()
    for name in config.platforms:
        t0 = time.perf_counter()
        adapter = load_adapter(name)
        p_rows, p_rejects, summary = _build_platform(adapter, google, config, seen)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        progress(f"[catalog] {adapter.platform}: read {summary['read']:,}, accepted "
                 f"{summary['accepted']:,}, rejected {summary['rejected']:,} "
                 f"{summary['rejected_by_reason']} ({summary['seconds']} s)")
        if summary["accepted"] + summary["rejected"] != summary["read"]:
            raise AssertionError(f"{adapter.platform}: accepted + rejected != read")  # never lose rows
        per_platform[adapter.platform] = summary
        rows += p_rows
        rejects += p_rejects
    groups = _assign_splits(rows, config, progress)
    if config.sample_per_category:
        rows = _sample(rows, config.sample_per_category, config.split_seed)
        for platform, summary in per_platform.items():
            summary["sampled"] = sum(1 for r in rows if r["platform"] == platform)
    labelled = [r["category_id"] for r in rows if r["category_id"] is not None]
    taxonomy = google.induced(labelled, max_depth=None) if labelled else google.induced([])
    platforms = sorted(per_platform)
    protocol = {"split": {"version": SPLIT_VERSION, "splits": list(SPLITS),
                          "fractions": list(config.split_fractions), "seed": config.split_seed,
                          "by": "sha1(seed:group_id)", "group_keys": list(KEYS) if config.group_images
                          else [k for k in KEYS if k != "image"]},
                "leave_one_platform_out": leave_one_platform_out(platforms),
                "max_depth": config.max_depth, "sample_per_category": config.sample_per_category}
    table = pa.Table.from_pylist(rows, schema=PRODUCT_SCHEMA).replace_schema_metadata(
        {"prodcat": json.dumps(protocol)})
    out = config.output
    storage.write_table(table, storage.join(out, "products.parquet"))
    storage.write_table(pa.Table.from_pylist([r.as_row() for r in rejects], schema=REJECT_SCHEMA),
                        storage.join(out, "rejects.parquet"))
    storage.write_text(storage.join(out, "taxonomy.json"), taxonomy.to_json())
    summary = {"platforms": per_platform, "products": len(rows), "rejects": len(rejects),
               "splits": dict(Counter(r["split"] for r in rows)), "protocol": protocol,
               "groups": groups,
               "taxonomy": _taxonomy_summary(taxonomy, rows),
               "seconds": round(time.perf_counter() - start, 2), "output": out}
    storage.write_text(storage.join(out, "build_summary.json"), json.dumps(summary, indent=2))
    storage.write_text(storage.join(out, "build_summary.md"), summary_markdown(summary))
    progress(f"[catalog] {len(rows):,} products, {len(rejects):,} rejects, "
             f"{summary['taxonomy']['nodes']} taxonomy nodes → {out} ({summary['seconds']} s)")
    return summary


def summary_markdown(summary: dict) -> str:
    """The build summary as a Markdown report a person can read."""
    lines = ["# Catalogue build", "",
             f"{summary['products']:,} products accepted, {summary['rejects']:,} rejected, "
             f"in {summary['seconds']} s. Splits: {summary['splits']}.", ""]
    if summary["protocol"].get("sample_per_category"):
        lines += [f"Stratified sample: at most {summary['protocol']['sample_per_category']} products "
                  "per (platform, Google category), chosen by a hash of product_id; the 'sampled' "
                  "column counts what was kept.", ""]
    lines += [
             "| platform | read | accepted | rejected (by reason) | source categories (mapped / excluded) "
             "| Google categories | without image | seconds |", "|---|---|---|---|---|---|---|---|"]
    sampled = any("sampled" in s for s in summary["platforms"].values())
    if sampled:
        lines[-2] += " sampled |"
        lines[-1] += "---|"
    for name, s in summary["platforms"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected_by_reason"].items())) or "-"
        lines.append(f"| {name} | {s['read']:,} | {s['accepted']:,} | {s['rejected']:,} ({reasons}) | "
                     f"{s['source_categories']} ({s['source_categories_mapped']} / "
                     f"{s['source_categories_excluded']}) | {s['google_categories_used']} | "
                     f"{s['without_image']:,} | {s['seconds']} |" + (f" {s['sampled']:,} |" if sampled else ""))
    tax = summary["taxonomy"]
    lines += ["", f"## Unified taxonomy ({tax['version']})", "",
              f"{tax['nodes']} nodes ({tax['virtual_leaves']} virtual leaves), {tax['leaves']} leaves, "
              f"{tax['label_categories']} categories with products.", "",
              "| level | nodes |", "|---|---|"]
    lines += [f"| {level} | {n} |" for level, n in enumerate(tax["nodes_per_level"])]
    lines += ["", "## Categories with products from two or more platforms", "",
              "| category id | path | platforms | products |", "|---|---|---|---|"]
    lines += [f"| {c['category_id']} | {c['path']} | {', '.join(c['platforms'])} | {c['products']:,} |"
              for c in tax["cross_platform_categories"]]
    lines += ["", ""] + groups_markdown(summary.get("groups"))
    lines += ["", "Leave-one-platform-out folds: " + "; ".join(
        f"test {f['test']} ← train {', '.join(f['train'])}"
        for f in summary["protocol"]["leave_one_platform_out"])]
    return "\n".join(lines) + "\n"


def groups_markdown(groups: dict | None) -> list[str]:
    """The near-duplicate groups and the cross-split duplicate pairs, before and after."""
    if not groups:
        return []
    per = groups["per_platform"]
    lines = ["## Near-duplicate groups and splits", "",
             "Products of one platform that share a normalized title and description, the "
             "platform's variant key (H&M: product code) or a perceptual image hash form one group; "
             "a group's split comes from a hash of its id, so near-duplicates never straddle "
             "train, validation, calibration and test.", "",
             markdown_table(["platform", "products", "groups", "products in shared groups",
                             "largest group", "its titles"],
                            [[p, s["products"], s["groups"], s["products_in_shared_groups"],
                              s["largest_group"]["size"], "; ".join(s["largest_group"]["titles"])[:120]]
                             for p, s in per.items()]), "",
             "Pairs of products that share a key but sit in different splits:", ""]
    pairs = groups["cross_split_pairs"]
    rows = [[p, how] + [pairs[k][p][key] for key in KEYS]
            for p in per for how, k in (("product id (old)", "by_product_id"), ("group (now)", "by_group"))]
    lines.append(markdown_table(["platform", "splits by", *[f"same {k}" for k in KEYS]], rows))
    return lines


def read_protocol(products_uri: str) -> dict:
    """The split protocol and LOPO folds recorded in a product table's metadata."""
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(products_uri)
    meta = pq.read_schema(path, filesystem=fs).metadata or {}
    return json.loads(meta.get(b"prodcat", b"{}"))


class SplitVersionError(ValueError):
    """A product table whose splits were assigned another way than this version assigns them."""


def check_split_version(products_uri: str) -> dict:
    """The table's protocol, after checking that its splits are this version's
    (:data:`prodcat.core.schema.SPLIT_VERSION`).

    Raises:
        SplitVersionError: for a table built with other splits (e.g. the old product-id hash,
            which let near-duplicates straddle train and test), saying how to rebuild it.
    """
    protocol = read_protocol(products_uri)
    found = protocol.get("split", {}).get("version", "product-id-1 (before grouped splits)")
    if found != SPLIT_VERSION:
        raise SplitVersionError(
            f"{products_uri} was built with split version {found!r}, not {SPLIT_VERSION!r}: its "
            "splits let near-duplicates straddle train and test. Rebuild it with `prodcat catalog "
            "build` (and re-train the models made from it; the embedding store can be reused).")
    return protocol
