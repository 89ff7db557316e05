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
