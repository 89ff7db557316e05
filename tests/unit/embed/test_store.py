"""The embedding store's file format round-trips on every pyarrow the project accepts.

This module imports only numpy, pyarrow and ``prodcat.embed.store`` (with ``prodcat.core.storage``):
``.ci/run`` also runs it in a small virtualenv holding the oldest supported pyarrow (17, Ray Data
2.60's minimum) and nothing else, with ``--noconftest``; the normal suite runs it on the pinned one.

Format 2 writes zero vectors (no nulls inside fixed-size lists) and lets the status column say
which vectors exist. A store in format 1 (null vectors; :mod:`tests.fixtures.store_v1`, which only pyarrow >= 26
can write: on an older one the store comes from ``$PRODCAT_STORE_V1``, written beforehand by the
pinned environment) is read where the installed pyarrow can, else refused with the conversion
command; ``upgrade_store`` converts it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodcat.core.errors import DataError
from prodcat.embed.store import (
    STORE_VERSION,
    V1_READABLE_FROM,
    StoreFormatError,
    UnreadableStorePart,
    feature_matrix,
    list_parts,
    make_manifest,
    prepare_store,
    read_manifest,
    read_store,
    skipped_rows,
    to_store_table,
    upgrade_store,
    write_part,
)
from tests.fixtures.store_v1 import ENV, MISSING_IMAGES, expected_vectors, write_store_v1

pytestmark = pytest.mark.unit

PYARROW_MAJOR = int(pa.__version__.split(".")[0])
DIMS = {"text": 16, "image": 8}


def _manifest() -> dict:
    return make_manifest({f: {"encoder": f, "modality": f, "dim": d, "image_size": None,
                              "fingerprint": {"key": f"fp-{f}"}} for f, d in DIMS.items()})


def _batch(n: int, start: int = 0, seed: int = 0) -> dict:
    """``n`` products; every 4th has no image, every 9th a corrupt one, every 11th empty text."""
    rng = np.random.default_rng(seed)
    ids = np.arange(start, start + n)
    image_status = np.where(ids % 4 == 3, "no_image", np.where(ids % 9 == 8, "image_corrupt", "ok"))
    text_status = np.where(ids % 11 == 10, "no_text", "ok")
    return {"product_id": [f"shop:{i}" for i in ids],
            "emb_text": rng.normal(size=(n, DIMS["text"])).astype(np.float32),
            "status_text": text_status.tolist(),
            "emb_image": rng.normal(size=(n, DIMS["image"])).astype(np.float32),
            "status_image": image_status.tolist()}


def test_roundtrip_rows_and_vectors(tmp_path):
    """Rows in = rows out, vectors equal where the status is ok, zeros elsewhere; no nulls in
    any vector column; two parts, one product written twice kept once."""
    store, manifest = str(tmp_path / "store"), _manifest()
    done, found = prepare_store(store, manifest)
    assert len(done) == 0 and found["skipped"] == []
    batches = [_batch(300, 0, seed=1), _batch(257, 300, seed=2)]
    for i, batch in enumerate(batches):
        write_part(to_store_table(batch, manifest), store, f"run{i}")
    table, read_manifest_ = read_store(store)
    assert table.num_rows == 557 and read_manifest_["version"] == STORE_VERSION
    assert table["product_id"].to_pylist() == [p for b in batches for p in b["product_id"]]
    for feature in DIMS:
        assert table[f"emb_{feature}"].null_count == 0
        vectors, present = feature_matrix(table, feature)
        expected = np.concatenate([b[f"emb_{feature}"] for b in batches])
        ok = np.concatenate([np.asarray(b[f"status_{feature}"]) == "ok" for b in batches])
        assert present.tolist() == ok.tolist() and 0 < ok.sum() < len(ok)
        np.testing.assert_array_equal(vectors[ok], expected[ok])
        assert not vectors[~ok].any()
    for uri in list_parts(store):                     # what is on disk: no null, no nullable vector
        schema = pq.read_schema(uri)
        assert not schema.field("emb_image").nullable
        assert json.loads(schema.metadata[b"prodcat"])["version"] == STORE_VERSION
    assert prepare_store(store, manifest)[0].to_pylist() == table["product_id"].to_pylist()


def test_a_part_written_again_replaces_itself(tmp_path):
    """A write task that Ray runs again (its node died after the write, or its output was rebuilt
    from lineage) writes the same rows under the same name: one part, no product stored twice;
    the rows' order in the batch does not change the name, other rows or features do."""
    store, manifest = str(tmp_path / "store"), _manifest()
    prepare_store(store, manifest)
    batch = _batch(40, seed=3)
    first = write_part(to_store_table(batch, manifest), store, "run0")
    order = np.random.default_rng(0).permutation(40)
    again = write_part(to_store_table({k: np.asarray(v)[order] for k, v in batch.items()}, manifest),
                       store, "run0")
    assert again == first and len(list_parts(store)) == 1
    ids = pq.read_table(list_parts(store)[0], columns=["product_id"])["product_id"].to_pylist()
    assert sorted(ids) == sorted(batch["product_id"]) and read_store(store)[0].num_rows == 40
    other = write_part(to_store_table(_batch(40, 40, seed=3), manifest), store, "run0")
    assert other != first and len(list_parts(store)) == 2


def test_unreadable_part_stops_unless_skipped(tmp_path):
    store, manifest = str(tmp_path / "store"), _manifest()
    prepare_store(store, manifest)
    write_part(to_store_table(_batch(50), manifest), store, "good")
    bad = Path(store) / write_part(to_store_table(_batch(30, 50), manifest), store, "bad")
    bad.write_bytes(bad.read_bytes()[:-200])          # a truncated file (lost footer)
    with pytest.raises(UnreadableStorePart, match=bad.name) as err:
        read_store(store)
    assert isinstance(err.value, DataError) and "--skip-unreadable" in str(err.value)
    with pytest.raises(UnreadableStorePart):
        prepare_store(store, manifest)
    table, found = read_store(store, skip_unreadable=True)
    assert table.num_rows == 50 and [s["file"] for s in found["skipped"]] == [str(bad)]
    assert skipped_rows(found) == 0                   # its footer is gone: size unknown

    damaged = Path(store) / write_part(to_store_table(_batch(40, 100), manifest), store, "dmg")
    data = bytearray(damaged.read_bytes())
    data[200:900] = b"\x00" * 700                     # damaged pages, footer intact
    damaged.write_bytes(bytes(data))
    table, found = read_store(store, skip_unreadable=True)
    assert table.num_rows == 50 and skipped_rows(found) == 40


@pytest.fixture(scope="module")
def v1_store(tmp_path_factory) -> Path:
    """A format-1 store: ``$PRODCAT_STORE_V1`` when set, else written here (pyarrow >= 26)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    if PYARROW_MAJOR < V1_READABLE_FROM:
        pytest.skip(f"pyarrow {pa.__version__} cannot write a format-1 store; set {ENV} to one "
                    "written by `python -m tests.fixtures.store_v1 DIR` under the pinned pyarrow "
                    "(.ci/run does)")
    return write_store_v1(tmp_path_factory.mktemp("store_v1"))


def _copy_v1(v1_store: Path, tmp_path) -> str:
    store = tmp_path / "v1"
    shutil.copytree(v1_store, store)
    return str(store)


def _check_v1_values(table: pa.Table) -> None:
    """The fixture's values (tests.fixtures.store_v1), null image vectors read as zeros."""
    text, text_ok = feature_matrix(table, "text")
    image, image_ok = feature_matrix(table, "image")
    assert table.num_rows == 12 and text_ok.all()
    expected_text, expected = expected_vectors()
    np.testing.assert_array_equal(text, expected_text)
    assert np.flatnonzero(~image_ok).tolist() == MISSING_IMAGES
    expected[MISSING_IMAGES] = 0
    np.testing.assert_array_equal(image, expected)
    assert table["emb_image"].null_count == 0


def test_old_format_is_read_or_refused_with_the_conversion_command(v1_store, tmp_path):
    store = _copy_v1(v1_store, tmp_path)
    if PYARROW_MAJOR >= V1_READABLE_FROM:
        table, _ = read_store(store)                  # this pyarrow reads format 1: converted
        _check_v1_values(table)
    else:
        with pytest.raises(StoreFormatError) as err:
            read_store(store)
        assert f"prodcat embed --upgrade-store --output {store}" in str(err.value)
        assert isinstance(err.value, DataError)
    manifest = read_manifest(store)
    with pytest.raises(StoreFormatError, match="--upgrade-store"):
        prepare_store(store, manifest)                # never append format-2 parts to format 1


def test_old_format_without_null_vectors_reads_everywhere(tmp_path):
    """A format-1 part whose vectors are all present is plain Parquet any pyarrow reads."""
    store, manifest = str(tmp_path / "v1clean"), dict(_manifest(), version=1)
    Path(store).mkdir()
    (Path(store) / "manifest.json").write_text(json.dumps(manifest))
    batch = _batch(20)
    batch["status_image"] = ["ok"] * 20
    batch["status_text"] = ["ok"] * 20
    table = to_store_table(batch, manifest)
    pq.write_table(table.replace_schema_metadata({"prodcat": json.dumps(manifest)}),
                   str(Path(store) / "part-old-0.parquet"))
    out, _ = read_store(store)
    np.testing.assert_array_equal(feature_matrix(out, "image")[0], batch["emb_image"])


@pytest.mark.skipif(PYARROW_MAJOR < V1_READABLE_FROM,
                    reason=f"reading format-1 parts needs pyarrow >= {V1_READABLE_FROM}")
def test_upgrade_store_converts_in_place_and_is_idempotent(v1_store, tmp_path):
    store = _copy_v1(v1_store, tmp_path)
    result = upgrade_store(store, log=lambda line: None)
    assert (result["upgraded"], result["rows"], result["parts"]) == (1, 12, 1)
    assert read_manifest(store)["version"] == STORE_VERSION
    table, _ = read_store(store)
    _check_v1_values(table)
    (part,) = list_parts(store)
    assert json.loads(pq.read_schema(part).metadata[b"prodcat"])["version"] == STORE_VERSION
    assert pq.read_table(part)["emb_image"].null_count == 0
    assert upgrade_store(store, log=lambda line: None)["upgraded"] == 0
    done, _ = prepare_store(store, read_manifest(store))   # now appendable
    assert len(done) == 12


def test_a_feature_added_to_an_existing_store_is_merged_beside_the_stored_ones(tmp_path):
    """An encoder added later (feature ``ft``) gets parts of its own: the stored parts are not
    touched, the manifest names both, readers join by product_id, and a product is returned when
    every asked feature has it (a partly added feature reads as a partial store)."""
    from prodcat.embed.store import StoreMismatch, embedded_ids, read_vectors

    store, manifest = str(tmp_path / "store"), _manifest()
    prepare_store(store, manifest)
    first = _batch(40, 0, seed=1)
    write_part(to_store_table(first, manifest), store, "frozen")
    frozen = {p: Path(p).read_bytes() for p in list_parts(store)}

    added = make_manifest({"ft": {"encoder": "ft", "modality": "text", "dim": 4,
                                  "image_size": None, "fingerprint": {"key": "fp-ft"}}})
    done, _ = prepare_store(store, added)              # nothing of "ft" yet; manifest merged
    assert len(done) == 0 and list(read_manifest(store)["features"]) == ["text", "image", "ft"]
    rng = np.random.default_rng(3)
    ft = {"product_id": first["product_id"][25:] + ["shop:99"],   # 15 of the stored + one new
          "emb_ft": rng.normal(size=(16, 4)).astype(np.float32), "status_ft": ["ok"] * 16}
    write_part(to_store_table(ft, added), store, "added")

    assert {p: Path(p).read_bytes() for p in frozen} == frozen           # nothing rewritten
    ids, _ = embedded_ids(store)
    assert len(ids["text"]) == 40 and len(ids["ft"]) == 16
    assert prepare_store(store, added)[0].to_pylist() == ft["product_id"]
    assert len(prepare_store(store, manifest)[0]) == 40                # the frozen set: complete
    text_only, _ = read_store(store, ["product_id", "emb_text", "status_text"])
    assert text_only["product_id"].to_pylist() == first["product_id"]
    both, _ = read_store(store)                                       # all features: the overlap
    assert both["product_id"].to_pylist() == first["product_id"][25:]
    assert both.column_names == ["product_id", "emb_text", "status_text", "emb_image",
                                 "status_image", "emb_ft", "status_ft"]
    np.testing.assert_array_equal(feature_matrix(both, "ft")[0], ft["emb_ft"][:15])
    text, ok = feature_matrix(both, "text")
    assert ok.tolist() == [s == "ok" for s in first["status_text"][25:]] and not ok.all()
    np.testing.assert_array_equal(text[ok], first["emb_text"][25:][ok])

    pids, x, present = read_vectors(store, "ft", ["shop:30", "shop:1", "shop:99"])
    assert pids.tolist() == ["shop:30", "shop:1", "shop:99"] and present.tolist() == [True, False, True]
    np.testing.assert_array_equal(x[0], ft["emb_ft"][5]) and not x[1].any()

    other = make_manifest({"ft": {"encoder": "ft", "modality": "text", "dim": 4,
                                  "image_size": None, "fingerprint": {"key": "fp-other"}}})
    with pytest.raises(StoreMismatch, match="feature_prefix"):        # same name, other weights
        prepare_store(store, other)
    stray = tmp_path / "stray"                                        # a part of another store
    prepare_store(str(stray), other)
    name = write_part(to_store_table(ft, other), str(stray), "x")
    shutil.copy(stray / name, Path(store) / name)
    with pytest.raises(StoreMismatch, match="does not belong"):
        read_store(store)
