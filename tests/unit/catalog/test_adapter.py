"""Adapters on slices of the real exports, and malformed inputs rejected with reasons."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from prodcat.catalog.adapter import AdapterConfig, Reject, load_adapter, read_products
from tests.fixtures.catalog import slice_export

pytestmark = pytest.mark.unit


def _split(items):
    ok = [i for i in items if not isinstance(i, Reject)]
    bad = [i for i in items if isinstance(i, Reject)]
    return ok, bad


@pytest.mark.parametrize("platform", ["myntra", "hm", "flipkart"])
def test_real_slices_read_clean_and_resolve_images(platform, tmp_path, shared):
    export = slice_export(platform, tmp_path, records=30, gzip_it=True)
    config = load_adapter(platform).model_copy(update={"path": str(export)})
    ok, bad = _split(list(read_products(config)))
    assert len(ok) + len(bad) == 30
    assert len(ok) >= 28
    for row in ok:
        assert row["product_id"].startswith(platform + ":")
        assert row["title"] and "<" not in (row["description"] or "")
        assert " > " in row["source_category"]
        assert row["image_uri"] is None or row["image_uri"].endswith(".jpg")


def test_hm_keeps_leading_zero_and_image_layout(tmp_path, shared):
    export = slice_export("hm", tmp_path, records=3)
    config = load_adapter("hm").model_copy(update={"path": str(export)})
    row = next(iter(read_products(config)))
    assert row["product_id"] == "hm:0111565001"
    assert row["image_uri"].endswith("images/011/0111565001.jpg")


def test_flipkart_category_is_capped_at_three_levels(tmp_path, shared):
    export = slice_export("flipkart", tmp_path, records=20)
    config = load_adapter("flipkart").model_copy(update={"path": str(export)})
    for row in _split(list(read_products(config)))[0]:
        assert 2 <= len(row["source_category"].split(" > ")) <= 3


def _jsonl_config(path: Path) -> AdapterConfig:
    return AdapterConfig.model_validate({
        "platform": "shop", "format": "jsonl", "path": str(path), "mapping": None,
        "columns": {"source_id": "id", "title": "name", "description": "desc"},
        "category": {"columns": ["cat"], "separator": "/"}})


def test_jsonl_malformed_lines_rejected_nothing_lost(tmp_path):
    lines = [
        json.dumps({"id": 1, "name": "Good shoe", "desc": "<b>nice</b>", "cat": "Shoes/Boots"}).encode(),
        b'{"id": 2, "name": "broken', b"[1, 2, 3]",
        json.dumps({"id": 3, "name": "", "cat": "Shoes"}).encode(),
        json.dumps({"id": 4, "name": "No category"}).encode(),
        b'{"id": 5, "name": "Caf\xe9 mug", "cat": "Home/Mugs"}',
        json.dumps({"id": 6, "name": "Fine mug", "cat": "Home/Mugs"}).encode(),
    ]
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    ok, bad = _split(list(read_products(_jsonl_config(path))))
    assert [r["product_id"] for r in ok] == ["shop:1", "shop:6"]
    assert ok[0]["description"] == "nice" and ok[0]["source_category"] == "Shoes > Boots"
    reasons = Counter(r.reason for r in bad)
    assert reasons == {"parse_error": 2, "missing_title": 1, "missing_category": 1, "non_utf8": 1}
    assert len(ok) + len(bad) == len(lines)
    broken = next(r for r in bad if "broken" in r.raw)
    assert broken.location.endswith(":2") and "invalid JSON" in broken.detail


def test_csv_bad_quoting_and_field_counts_rejected(tmp_path):
    text = ('sku,name,cat\n'
            '1,Plain,A/B\n'
            '2,"bad "quote" here,A/B\n'
            '3,too,many,fields\n'
            '4,"multi\nline title",A/B\n'
            '5,Last,A/B\n')
    path = tmp_path / "x.csv"
    path.write_text(text)
    config = AdapterConfig.model_validate({
        "platform": "shop", "format": "csv", "path": str(path), "mapping": None,
        "columns": {"source_id": "sku", "title": "name"}, "category": {"columns": ["cat"], "separator": "/"}})
    ok, bad = _split(list(read_products(config)))
    assert [r["product_id"] for r in ok] == ["shop:1", "shop:4", "shop:5"]
    assert ok[1]["title"] == "multi line title"
    assert sorted(r.reason for r in bad) == ["parse_error", "parse_error"]
    assert any("quoting" in r.detail for r in bad) and any("expected 3 fields" in r.detail for r in bad)


def test_unknown_platform_lists_builtins():
    with pytest.raises(KeyError, match="myntra"):
        load_adapter("nonexistent-shop")
