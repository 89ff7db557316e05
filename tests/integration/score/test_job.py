"""Bulk scoring as a Ray Data job on a tiny real cascade: bad rows mixed in (rows in = rows out),
resumption after an interruption, S3 input and output, and the CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodcat.core import storage
from prodcat.core.schema import PREDICTION_SCHEMA
from prodcat.score import ScoreConfig, evaluate_prediction_table, score
from prodcat.score.inputs import read_input
from prodcat.score.parts import done_rows, list_parts, read_predictions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    from tests.fixtures.cascade import build_tiny_cascade

    return build_tiny_cascade(tmp_path_factory.mktemp("cascade"))


def _messy_jsonl(cascade, path) -> tuple[int, dict]:
    """Good product-table rows with bad ones mixed in; returns (number of lines, expected errors)."""
    products = cascade["products"]
    corrupt = cascade["image_dir"] / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    lines = [json.dumps({k: r[k] for k in ("product_id", "title", "description", "image_uri")})
             for r in products.to_pylist()[:40]]
    bad = {
        3: '{"product_id": "x:broken", "title": "unterminated',                  # not JSON
        7: json.dumps({"product_id": "x:notitle", "title": "   "}),               # blank title
        11: json.dumps({"title": "no id at all"}),                                 # no id
        15: json.dumps({"product_id": "x:corrupt", "title": "red boots",
                        "image_uri": str(corrupt)}),                               # corrupt image
        19: json.dumps({"product_id": "x:gone", "title": "blue mug",
                        "image_uri": "/nonexistent/image.png"}),                   # missing image
        23: json.dumps({"product_id": "x:num", "title": 12345}),                   # title not text
        27: "[1, 2, 3]",                                                           # not an object
    }
    for i, line in sorted(bad.items()):
        lines.insert(i, line)
    path.write_text("\n".join(lines) + "\n")
    errors = {"x:notitle": "missing_title", "x:broken": "parse_error"}
    return len(lines), errors


def test_bad_rows_mixed_in_rows_in_equal_rows_out(ray_session, cascade, tmp_path):
    src = tmp_path / "messy.jsonl"
    n_lines, _ = _messy_jsonl(cascade, src)
    out = tmp_path / "pred"
    config = ScoreConfig(model=cascade["cascade"], input=str(src), output=str(out),
                         text_batch_size=16, multimodal_batch_size=8, text_num_cpus=0.5,
                         multimodal_num_cpus=0.5, rows_per_file=10)
    summary = score(config)
    table = read_predictions(str(out))
    assert table.num_rows == n_lines == summary["rows"]                 # rows in = rows out
    assert sorted(done_rows(str(out)).tolist()) == list(range(n_lines))  # each row exactly once
    assert pq.read_schema(list_parts(str(out))[0]).remove_metadata().equals(PREDICTION_SCHEMA)
    rows = {r["product_id"]: r for r in table.to_pylist()}
    assert rows["x:notitle"]["error"].startswith("missing_title")
    assert any(pid.endswith(":4") and r["error"].startswith("parse_error") for pid, r in rows.items())
    assert any(r["error"] and r["error"].startswith("missing_id") for r in rows.values())
    assert rows["x:num"]["error"] is None and rows["x:num"]["category_id"] is not None
    for pid in ("x:corrupt", "x:gone"):                     # a bad image never loses the product
        assert rows[pid]["error"] is None and rows[pid]["category_path"]
    scored = [r for r in rows.values() if r["error"] is None]
    assert all(r["stage"] in ("text", "multimodal") and r["model_version"] for r in scored)
    assert all(0.0 <= c <= 1.0 for r in scored for c in r["level_confidence"])
    assert 0 < summary["escalated"] < len(scored)           # the cascade routed some of them
    assert summary["answered_by"]["multimodal"] == summary["escalated"]
    assert summary["complete"] and storage.exists(str(out / "_summary.json"))


def test_rerun_after_interruption_scores_only_missing_rows(ray_session, cascade, tmp_path):
    products = cascade["products"]
    src = tmp_path / "products.parquet"
    pq.write_table(products, src)
    out = tmp_path / "pred"
    config = ScoreConfig(model=cascade["cascade"], input=str(src), output=str(out),
                         features_from=cascade["embeddings"],      # vectors reused from the store
                         mode="text",                  # one actor pool: the cascade is tested above
                         text_num_cpus=0.5, rows_per_file=20)
    first = score(config)
    parts = list_parts(str(out))
    assert first["written_this_run"] == products.num_rows and len(parts) >= 3
    lost = pq.read_table(parts[0]).num_rows
    storage.filesystem(parts[0])[0].delete_file(parts[0])    # as if the job died before this part
    (out / "_summary.json").unlink()
    again = score(config)
    assert again["skipped_already_done"] == products.num_rows - lost
    assert again["written_this_run"] == lost and again["complete"]
    table = read_predictions(str(out))
    assert table.num_rows == products.num_rows
    assert sorted(table["product_id"].to_pylist()) == sorted(products["product_id"].to_pylist())
    assert score(config)["written_this_run"] == 0             # nothing left to do
    other = config.model_copy(update={"threshold": 0.0})
    with pytest.raises(ValueError, match="another job"):
        score(other)
    quality = evaluate_prediction_table(table, products, cascade["taxonomy"], split=None)
    assert quality["products"] == products.num_rows and 0.0 <= quality["hF"] <= 1.0


def test_s3_input_and_output_via_cli(ray_session, cascade, s3_bucket, tmp_path):
    from prodcat.cli import main

    products = cascade["products"].slice(0, 30)
    src = f"{s3_bucket}/in/products.parquet"
    storage.write_table(products, src)
    out = f"{s3_bucket}/pred"
    assert main(["score", "--model", cascade["cascade"], "--input", src, "--output", out,
                 "--mode", "multimodal", "--set", "multimodal_num_cpus=0.5"]) == 0
    table = read_predictions(out)
    assert table.num_rows == 30 and set(table["stage"].to_pylist()) == {"multimodal"}
    assert storage.exists(f"{out}/_summary.json")


def test_read_input_generic_adapter(cascade, tmp_path):
    import csv

    export = tmp_path / "shop.csv"
    with export.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sku", "name", "body", "cat"])
        w.writerow(["001", "<b>Leather</b> boots", "Warm &amp; dry", "Shoes"])
        w.writerow(["002", "", "no name", "Shoes"])
        w.writerow(["003", "Mug", "ceramic"])                  # a field short
    adapter = tmp_path / "shop.yaml"
    adapter.write_text("platform: shop\nformat: csv\npath: unused.csv\n"
                       "columns: {source_id: sku, title: name, description: body}\n"
                       "category: {columns: [cat]}\nmapping: null\n")
    table = read_input(ScoreConfig(input=str(export), adapters=[str(adapter)], output=str(tmp_path / "o")))
    rows = table.to_pylist()
    assert [r["_row"] for r in rows] == [0, 1, 2]
    assert rows[0]["product_id"] == "shop:001" and rows[0]["title"] == "Leather boots"
    assert rows[0]["description"] == "Warm & dry" and rows[0]["_error"] is None
    assert rows[1]["_error"].startswith("missing_title")
    assert rows[2]["_error"].startswith("parse_error")
    assert np.all(pa.array([r["product_id"] for r in rows]).is_valid())


def test_stored_vectors_give_the_same_predictions_as_raw_inputs(cascade):
    """Reusing embedding-store vectors (fingerprints match) is exact, and rows the store lacks
    are encoded from their raw inputs."""
    from prodcat.cascade.stage import StageRunner
    from prodcat.embed.store import read_store
    from prodcat.score.features import attach_store, checkpoint_fingerprints

    products = cascade["products"].slice(0, 24)
    batch = products.select(["product_id", "title", "description", "image_uri"])
    store, manifest = read_store(cascade["embeddings"])
    store = store.slice(0, 16)                              # the last 8 products are not stored
    fps = checkpoint_fingerprints(cascade["multimodal_model"])
    attached = attach_store(batch, store, manifest, fps)
    assert attached["fp_image"].null_count == 8
    runner = StageRunner(cascade["multimodal_model"], "multimodal", device="cpu")
    raw = runner.predict_batch(batch.to_pydict())
    reused = runner.predict_batch(attached.to_pydict())
    assert raw["category_id"] == reused["category_id"]
    assert np.allclose(raw["confidence"], reused["confidence"], atol=1e-5)
    assert raw["image_status"] == reused["image_status"]


def test_a_local_prediction_folder_reads_as_one_table(ray_session, cascade, tmp_path, monkeypatch):
    """Ray's log goes to <output>/_logs, which pyarrow's dataset reader skips, so the documented
    `pyarrow.parquet.read_table(<output>)` works on the folder `prodcat score` wrote."""
    import pyarrow.parquet as pq

    from prodcat.cli import main
    from prodcat.core import console

    monkeypatch.delenv(console.LOG_DIR_ENV, raising=False)
    products = cascade["products"].slice(0, 20)
    src, out = tmp_path / "products.parquet", tmp_path / "pred"
    pq.write_table(products, src)
    assert main(["score", "--model", cascade["cascade"], "--input", str(src), "--output", str(out),
                 "--mode", "text"]) == 0
    assert (out / "_logs").is_dir() and not (out / "logs").exists()
    table = pq.read_table(out)
    assert table.num_rows == 20 and sorted(table["product_id"].to_pylist()) == sorted(
        products["product_id"].to_pylist())
