"""The catalogue build end to end against an S3-compatible server on loopback (moto): exports,
images, adapter configs and outputs all live in the bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from prodcat.catalog.adapter import load_adapter
from prodcat.catalog.build import BuildConfig, build_catalog, read_protocol
from prodcat.core import storage
from prodcat.core.schema import SPLIT_VERSION
from prodcat.core.taxonomy import Taxonomy
from tests.fixtures.catalog import slice_export

pytestmark = pytest.mark.integration


def _upload_platform(platform: str, bucket: str, tmp_path: Path, records: int) -> str:
    export = slice_export(platform, tmp_path, records=records, gzip_it=True)
    base = f"{bucket}/{platform}"
    storage.write_bytes(f"{base}/{export.name}", export.read_bytes())
    config = load_adapter(platform)
    # upload the images the slice refers to, all but the first (which must then be flagged)
    local = config.model_copy(update={"path": str(Path(config.export_uri()))})
    from prodcat.catalog.adapter import Reject, read_products

    sliced = local.model_copy(update={"path": str(export)})
    rows = [r for r in read_products(sliced) if not isinstance(r, Reject)]
    for row in rows[1:]:
        if row["image_uri"]:
            rel = Path(row["image_uri"]).relative_to(export.parent)
            real = Path(config.export_uri()).parent / rel
            if real.exists():
                storage.write_bytes(f"{base}/{rel}", real.read_bytes())
    data = config.model_dump()
    data["path"] = f"{base}/{export.name}"
    uri = f"{base}/adapter.yaml"
    storage.write_text(uri, yaml.safe_dump(data))
    return uri


def test_build_reads_and_writes_s3(s3_bucket, tmp_path, shared):
    adapters = [_upload_platform(p, s3_bucket, tmp_path, 25) for p in ("myntra", "hm", "flipkart")]
    out = f"{s3_bucket}/catalog"
    summary = build_catalog(BuildConfig(platforms=adapters, output=out), progress=lambda *_: None)
    for name, s in summary["platforms"].items():
        assert s["read"] == 25, name
        assert s["accepted"] + s["rejected"] == s["read"]
        assert s["without_image"] >= 1          # the first product's image was not uploaded
    products = storage.read_table(f"{out}/products.parquet")
    rejects = storage.read_table(f"{out}/rejects.parquet")
    assert products.num_rows + rejects.num_rows == 75
    assert products.num_rows == summary["products"]
    assert len(set(products.column("product_id").to_pylist())) == products.num_rows
    assert all(u.startswith("s3://") for u in products.column("image_uri").to_pylist() if u)
    taxonomy = Taxonomy.from_json(storage.read_text(f"{out}/taxonomy.json"))
    assert all(c in taxonomy for c in products.column("category_id").to_pylist())
    assert read_protocol(f"{out}/products.parquet")["leave_one_platform_out"]
    assert json.loads(storage.read_text(f"{out}/build_summary.json"))["products"] == products.num_rows
    assert "| myntra |" in storage.read_text(f"{out}/build_summary.md")


def test_build_is_deterministic_and_samples_by_category(tmp_path, shared):
    export = slice_export("myntra", tmp_path, records=60)
    adapter = tmp_path / "myntra.yaml"
    data = load_adapter("myntra").model_dump()
    data["path"] = str(export)
    adapter.write_text(yaml.safe_dump(data))
    a = build_catalog(BuildConfig(platforms=[str(adapter)], output=str(tmp_path / "a")), lambda *_: None)
    b = build_catalog(BuildConfig(platforms=[str(adapter)], output=str(tmp_path / "b"),
                                  sample_per_category=2), lambda *_: None)
    full = pq.read_table(tmp_path / "a" / "products.parquet").to_pylist()
    sample = pq.read_table(tmp_path / "b" / "products.parquet").to_pylist()
    split_of = {r["product_id"]: r["split"] for r in full}
    assert all(split_of[r["product_id"]] == r["split"] for r in sample)   # sampling never moves splits
    per_category = {}
    for r in sample:
        per_category[r["category_id"]] = per_category.get(r["category_id"], 0) + 1
    assert max(per_category.values()) <= 2
    assert set(per_category) == {r["category_id"] for r in full}
    assert a["products"] == len(full) and b["products"] == len(sample)


def test_near_duplicates_never_straddle_splits(tmp_path, shared):
    """A real H&M slice: articles of one product code (the adapter's variant key) and copies of
    one title + description share a group and a split; a planted exact copy of an image joins
    its original's group; the summary counts cross-split pairs before (product-id splits) and
    after (0)."""
    from PIL import Image

    from prodcat.catalog.groups import assign_groups, image_hashes

    export = slice_export("hm", tmp_path, records=120)
    # the adapter finds images next to its export: link the shared images beside the slice
    (export.parent / "images").symlink_to(Path(load_adapter("hm").export_uri()).parent / "images")
    adapter = tmp_path / "hm.yaml"
    data = load_adapter("hm").model_dump()
    data["path"] = str(export)
    adapter.write_text(yaml.safe_dump(data))
    summary = build_catalog(BuildConfig(platforms=[str(adapter)], output=str(tmp_path / "out")),
                            lambda *_: None)
    rows = pq.read_table(tmp_path / "out" / "products.parquet").to_pylist()
    by_code: dict[str, set] = {}
    for r in rows:
        by_code.setdefault(r["product_id"].split(":")[1][:7], set()).add((r["group_id"], r["split"]))
    assert all(len(v) == 1 for v in by_code.values())           # one group, one split per code
    assert any(sum(r["product_id"].split(":")[1][:7] == code for r in rows) > 1 for code in by_code)
    pairs = summary["groups"]["cross_split_pairs"]
    assert sum(pairs["by_group"]["hm"].values()) == 0
    assert pairs["by_product_id"]["hm"]["variant"] > 0          # what product-id splits did
    assert read_protocol(str(tmp_path / "out" / "products.parquet"))["split"]["version"] == SPLIT_VERSION
    assert "## Near-duplicate groups and splits" in (tmp_path / "out" / "build_summary.md").read_text()
    # a copy of one article's image in another format under an unrelated product: one group
    first = next(r for r in rows if r["has_image"])
    with Image.open(first["image_uri"]) as image:
        image.save(tmp_path / "copy.png")
    a, b = image_hashes([first["image_uri"], str(tmp_path / "copy.png")])
    probe = [{**first, "variant_key": None, "image_hash": a},
             {**first, "product_id": "hm:other", "title": "unrelated", "description": None,
              "variant_key": None, "image_hash": b}]
    assert a == b and len(set(assign_groups(probe))) == 1
