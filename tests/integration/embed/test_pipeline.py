"""The embedding pipeline on a local Ray instance, weights and stores on S3 (moto on loopback)."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest

from prodcat.core import storage
from prodcat.embed.encoders import ImageEncoderConfig, TextEncoderConfig, build_encoder
from prodcat.embed.pipeline import EmbedConfig, run_embedding
from prodcat.embed.store import (
    STORE_VERSION,
    StoreMismatch,
    feature_matrix,
    prepare_store,
    read_store,
    to_store_table,
    write_part,
)
from tests.fixtures.models import build_tiny_roberta, build_tiny_vit

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"text": build_tiny_roberta(root / "roberta"), "image": build_tiny_vit(root / "vit"),
            "text_other": build_tiny_roberta(root / "roberta_seed1", seed=1)}


def _upload_folder(local, uri: str) -> None:
    for path in sorted(local.iterdir()):
        storage.write_bytes(storage.join(uri, path.name), path.read_bytes())


def test_weights_from_s3_match_local_folder(tiny, s3_bucket, tmp_path):
    cache = tmp_path / "cache"
    for cfg_cls, name in ((TextEncoderConfig, "text"), (ImageEncoderConfig, "image")):
        uri = f"{s3_bucket}/models/{name}"
        _upload_folder(tiny[name], uri)
        local = build_encoder(cfg_cls(weights=str(tiny[name])))
        remote = build_encoder(cfg_cls(weights=uri), cache_dir=cache)
        assert remote.fingerprint == local.fingerprint
    assert len(list(cache.glob("*.complete"))) == 2            # copied once, then cached
    again = build_encoder(TextEncoderConfig(weights=f"{s3_bucket}/models/text"), cache_dir=cache)
    local = build_encoder(TextEncoderConfig(weights=str(tiny["text"])))
    np.testing.assert_allclose(again.encode_texts(["shirt"]), local.encode_texts(["shirt"]))


def _manifest(key: str, dim: int = 4) -> dict:
    feature = {"encoder": "text", "family": "text", "modality": "text", "dim": dim,
               "image_size": None, "fingerprint": {"key": key}, "config": {}}
    return {"version": STORE_VERSION, "features": {"text": feature}}


def test_store_on_s3_roundtrip_and_mismatch(s3_bucket):
    store = f"{s3_bucket}/emb"
    manifest = _manifest("k1")
    assert len(prepare_store(store, manifest)[0]) == 0
    batch = {"product_id": ["a", "b"], "emb_text": np.ones((2, 4), np.float32),
             "status_text": ["ok", "no_text"]}
    write_part(to_store_table(batch, manifest), store, "r1")
    assert prepare_store(store, manifest)[0].to_pylist() == ["a", "b"]
    table, found = read_store(store)
    assert found == dict(manifest, skipped=[]) and table.num_rows == 2
    matrix, present = feature_matrix(table, "text")
    assert matrix.shape == (2, 4) and present.tolist() == [True, False] and matrix[1].sum() == 0
    with pytest.raises(StoreMismatch, match="--overwrite"):
        prepare_store(store, _manifest("k2"))
    assert len(prepare_store(store, _manifest("k2"), overwrite=True)[0]) == 0


def _bad_image_products(tmp_path) -> tuple[pa.Table, dict]:
    """Synthetic products plus one per bad-image case; returns the table and expected statuses."""
    from PIL import Image

    from tests.fixtures.synthetic import synthetic_products
    from tests.unit.embed.test_imaging import _encoded, _png_with_header_size

    table, _ = synthetic_products(28, image_dir=tmp_path / "img")
    bad = tmp_path / "bad"
    bad.mkdir()
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    cases = {"image_too_large": buf.getvalue(), "image_corrupt": _encoded((64, 64))[:200],
             "image_not_image": b"%PDF-1.4 not an image", "image_too_many_pixels":
             _png_with_header_size(20_000, 20_000), "image_missing": None}
    rows = table.slice(0, 5).to_pylist()
    for row, (reason, data) in zip(rows, cases.items()):
        path = bad / f"{reason}.img"
        if data is not None:
            path.write_bytes(data)
        row.update(product_id=f"bad:{reason}", image_uri=str(path), has_image=True)
    table = pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)])
    return table, {f"bad:{r}": r for r in cases}


def _config_yaml(tmp_path, tiny, text_key: str = "text") -> str:
    config = {"encoders": {
        "text": {"family": "text", "weights": str(tiny[text_key]), "batch_size": 8,
                 "num_cpus": 0.5, "max_tokens": 32},
        "image": {"family": "image", "weights": str(tiny["image"]), "batch_size": 8,
                  "num_cpus": 0.5}},
        "image_limits": {"max_bytes": 100_000, "max_pixels": 10_000_000},
        "decode_batch_size": 8, "decode_num_cpus": 0.25, "block_rows": 8, "write_rows": 10}
    path = tmp_path / f"encoders_{text_key}.yaml"
    path.write_text(json.dumps(config))
    return str(path)


def test_pipeline_bad_images_and_resume(ray_session, tiny, tmp_path, s3_bucket, capsys):
    from prodcat.cli import main
    from prodcat.core.config import load_config

    products, expected = _bad_image_products(tmp_path)
    products_uri = f"{s3_bucket}/catalog/products.parquet"        # the table is read from S3
    storage.write_table(products, products_uri)
    store = str(tmp_path / "store")
    config_path = _config_yaml(tmp_path, tiny)
    config = load_config(EmbedConfig, config_path,
                         {"products": products_uri, "output": store, "limit": 15})

    first = run_embedding(config)                                  # an "interrupted" run: 15 rows
    assert first["embedded"] == 15 and first["skipped_already_embedded"] == 0
    before, _ = read_store(store)
    (tmp_path / "store" / ".tmp-part-crashed.parquet").write_bytes(b"PAR1 half a file")
    (tmp_path / "store" / "part-crashed-000.parquet").write_bytes(b"PAR1 cut short")

    args = ["embed", "--config", config_path, "--products", products_uri, "--output", store]
    assert main(args) == 2                          # an unreadable part stops the command...
    err = capsys.readouterr().err
    assert "part-crashed-000.parquet" in err and "--skip-unreadable" in err
    assert main(args + ["--skip-unreadable"]) == 0  # ...unless the user asks to skip it
    out = capsys.readouterr().out
    assert "skipped 1 unreadable store part" in out and "part-crashed-000.parquet" in out
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "store").glob("summary-*.json")]
    skipped = [s["skipped_unreadable"] for s in summaries if s["skipped_unreadable"]["parts"]]
    assert [p.rsplit("/", 1)[-1] for p in skipped[0]["parts"]] == ["part-crashed-000.parquet"]
    assert not (tmp_path / "store" / ".tmp-part-crashed.parquet").exists()
    (tmp_path / "store" / "part-crashed-000.parquet").unlink()
    table, manifest = read_store(store)
    ids = table["product_id"].to_pylist()
    assert len(ids) == len(set(ids)) == products.num_rows           # row count in = row count out
    assert set(manifest["features"]) == {"text", "image"}
    status = dict(zip(ids, table["status_image"].to_pylist()))
    for pid, reason in expected.items():
        assert status[pid] == reason
    text_status = dict(zip(ids, table["status_text"].to_pylist()))
    assert all(text_status[pid] == "ok" for pid in expected)       # bad image keeps its text
    assert sum(s == "no_image" for s in status.values()) == 4       # every 7th synthetic product
    image, present = feature_matrix(table, "image")
    assert present.sum() == sum(s == "ok" for s in status.values()) and not np.isnan(image).any()
    # vectors written by the first run are kept as they were
    first_rows = {pid: i for i, pid in enumerate(ids)}
    old_text, _ = feature_matrix(before, "text")
    new_text, _ = feature_matrix(table, "text")
    for j, pid in enumerate(before["product_id"].to_pylist()):
        np.testing.assert_array_equal(new_text[first_rows[pid]], old_text[j])

    again = run_embedding(config.model_copy(update={"limit": None}))     # nothing left to do
    assert again["embedded"] == 0 and again["skipped_already_embedded"] == products.num_rows
    other = load_config(EmbedConfig, _config_yaml(tmp_path, tiny, "text_other"),
                        {"products": products_uri, "output": store})
    with pytest.raises(StoreMismatch, match="text"):                  # other weights: refused
        run_embedding(other)
    other_args = ["embed", "--config", _config_yaml(tmp_path, tiny, "text_other"),
                  "--products", products_uri, "--output", store]
    assert main(other_args) == 2              # the command says what to do, without a traceback
    err = capsys.readouterr().err
    assert "other encoders" in err and "--overwrite" in err and "Traceback" not in err
