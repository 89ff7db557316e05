"""Which product rows an embedding run reads (``load_products``): platform and split filters, ids, done rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from prodcat.core import storage
from prodcat.core.config import load_config
from prodcat.embed.pipeline import EmbedConfig, load_products

pytestmark = pytest.mark.unit


def test_a_platform_filter_embeds_only_that_platforms_products(tmp_path):
    table = pa.table({"product_id": [f"p{i}" for i in range(6)], "platform": ["a", "b", "c"] * 2,
                      "title": ["t"] * 6, "description": [None] * 6, "image_uri": [""] * 6})
    uri = str(tmp_path / "products.parquet")
    storage.write_table(table, uri)
    none = pa.array([], pa.string())
    rows, total = load_products(uri, none, None, platforms=["b"])
    assert rows["product_id"].to_pylist() == ["p1", "p4"] and total == 2
    assert "platform" not in rows.column_names and rows["description"].to_pylist() == ["", ""]
    rows, total = load_products(uri, pa.array(["p4"]), None, product_ids=["p1", "p2", "p4"],
                                platforms=["b", "c"])
    assert rows["product_id"].to_pylist() == ["p1", "p2"] and total == 3
    assert load_products(uri, none, None)[1] == 6                      # no filter: every product
    storage.write_table(table.drop_columns(["platform"]), uri)
    with pytest.raises(ValueError, match="no 'platform' column"):
        load_products(uri, none, None, platforms=["b"])
    config = load_config(EmbedConfig, "configs/encoders.offline.yaml", ["platforms=[b]"])
    assert config.platforms == ["b"]


def test_a_split_filter_embeds_only_that_splits_products_and_combines_with_platforms(tmp_path):
    table = pa.table({"product_id": [f"p{i}" for i in range(6)], "platform": ["a", "b", "c"] * 2,
                      "split": ["train", "train", "val", "test", "train", "train"],
                      "title": ["t"] * 6, "description": ["d"] * 6, "image_uri": [""] * 6})
    uri = str(tmp_path / "products.parquet")
    storage.write_table(table, uri)
    none = pa.array([], pa.string())
    rows, total = load_products(uri, none, None, splits=["train"])
    assert rows["product_id"].to_pylist() == ["p0", "p1", "p4", "p5"] and total == 4
    assert "split" not in rows.column_names
    rows, total = load_products(uri, none, None, platforms=["b", "c"], splits=["train", "val"])
    assert rows["product_id"].to_pylist() == ["p1", "p2", "p4", "p5"] and total == 4
    storage.write_table(table.drop_columns(["split"]), uri)
    with pytest.raises(ValueError, match="splits=\\['train'\\]: .* no 'split' column"):
        load_products(uri, none, None, platforms=["b"], splits=["train"])
    assert load_products(uri, none, None, platforms=["b"])[1] == 2       # the platform alone still works


def test_the_command_passes_its_platforms_and_splits_to_the_config(capsys, monkeypatch, tmp_path):
    from prodcat import cli
    from prodcat.embed import pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "run_embedding", lambda config, overwrite=False: seen.update(c=config))
    assert cli.main(["embed", "--products", "x.parquet", "--output", str(tmp_path / "s"), "--platforms", "hm, myntra"]) == 0
    assert seen["c"].platforms == ["hm", "myntra"] and seen["c"].splits is None
    assert cli.main(["embed", "--products", "x.parquet", "--output", str(tmp_path / "s"), "--splits", "train"]) == 0
    assert seen["c"].splits == ["train"] and seen["c"].platforms is None
