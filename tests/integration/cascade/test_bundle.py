"""Relocatable artifacts: a cascade folder names its checkpoints (and, exported with
``--include-weights``, its encoder weights) relative to itself, so a copy in another directory or
on ``s3://`` (moto on loopback) is used for bulk scoring from there (and served: tests/cluster
deploys such a folder from S3); a cascade.json
from before format 2 still loads and exports; ``shared:`` weights that a node cannot find fail
with a message that says how to fix it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from prodcat.cascade.bundle import export_cascade
from prodcat.cascade.spec import FORMAT, read_cascade
from prodcat.core import storage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    from tests.fixtures.cascade import build_tiny_cascade

    return build_tiny_cascade(tmp_path_factory.mktemp("cascade"))


def _predict(cascade_uri: str, products, stage: str = "multimodal") -> dict:
    from prodcat.cascade.stage import StageRunner

    spec = read_cascade(cascade_uri)
    runner = StageRunner(getattr(spec, f"{stage}_model"), stage, device="cpu")
    return runner.predict_batch(products.select(["product_id", "title", "description",
                                                 "image_uri"]).to_pydict())


def test_the_fitted_cascade_names_its_checkpoints_relative_to_itself(cascade, tmp_path, monkeypatch):
    data = json.loads(Path(cascade["cascade"]).read_text())
    assert data["format"] == FORMAT
    assert (data["text_model"], data["multimodal_model"]) == ("text_model", "multimodal_model")
    copy = tmp_path / "elsewhere" / "cascade"
    shutil.copytree(Path(cascade["cascade"]).parent, copy)
    monkeypatch.chdir(tmp_path)                               # another working directory
    spec = read_cascade(str(copy))
    assert spec.text_model == str(copy / "text_model")
    products = cascade["products"].slice(0, 12)
    assert _predict(str(copy), products)["category_id"] == _predict(cascade["cascade"], products)["category_id"]


def test_a_cascade_from_before_format_2_loads_and_exports(cascade, tmp_path, monkeypatch):
    """The main job's layout: runs/sample/cascade/cascade.json naming runs/sample/train/... relative
    to the repository the fit ran in."""
    repo = tmp_path / "repo"
    for name in ("text_model", "multimodal_model"):
        shutil.copytree(Path(cascade[name]), repo / "runs/sample/train" / name)
    (repo / "runs/sample/cascade").mkdir(parents=True)
    legacy = json.loads(Path(cascade["cascade"]).read_text())
    legacy.pop("format")
    legacy.update(text_model="runs/sample/train/text_model",
                  multimodal_model="runs/sample/train/multimodal_model")
    (repo / "runs/sample/cascade/cascade.json").write_text(json.dumps(legacy))
    monkeypatch.chdir(tmp_path)                               # not the repository
    spec = read_cascade(str(repo / "runs/sample/cascade"))
    assert spec.text_model == str(repo / "runs/sample/train/text_model")

    out = tmp_path / "bundle"
    summary = export_cascade(str(repo / "runs/sample/cascade"), str(out))
    shutil.rmtree(repo)                                       # the bundle needs nothing from it
    assert summary["files"] == 11 and not summary["weights"]     # 2 x 5 files + cascade.json
    assert read_cascade(str(out)).multimodal_model == str(out / "multimodal_model")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_cascade(str(out), str(out))

    (tmp_path / "gone").mkdir()
    (tmp_path / "gone/cascade.json").write_text(json.dumps(legacy))
    with pytest.raises(FileNotFoundError, match="prodcat cascade export"):
        read_cascade(str(tmp_path / "gone"))


def test_exported_with_weights_to_s3_scores_from_there_and_builds_the_service(
        ray_session, cascade, s3_bucket, tmp_path, monkeypatch):
    from prodcat.cli import main
    from prodcat.score.parts import read_predictions
    from prodcat.serve.app import build_app

    bundle = f"{s3_bucket}/models/cascade"
    assert main(["cascade", "export", cascade["cascade"], bundle, "--include-weights"]) == 0
    names = [p for p, _ in storage.list_files_recursive(bundle)]
    assert "cascade.json" in names and any(p.startswith("encoders/minitext-") for p in names)
    config = json.loads(storage.read_text(f"{bundle}/multimodal_model/config.json"))
    weights = {f: info["config"]["weights"] for f, info in config["features"].items()}
    assert all(w.startswith("../encoders/") for w in weights.values()), weights

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRODCAT_CACHE_DIR", str(tmp_path / "cache"))   # a node with an empty cache
    products = cascade["products"].slice(0, 20)
    here, there = _predict(cascade["cascade"], products), _predict(bundle, products)
    assert here["category_id"] == there["category_id"]
    assert np.allclose(here["confidence"], there["confidence"], atol=1e-6)

    storage.write_table(products, f"{s3_bucket}/in/products.parquet")
    out = f"{s3_bucket}/pred"
    assert main(["score", "--model", bundle, "--input", f"{s3_bucket}/in/products.parquet",
                 "--output", out, "--set", "text_num_cpus=0.5", "--set", "multimodal_num_cpus=0.5"]) == 0
    table = read_predictions(out)
    assert sorted(table["product_id"].to_pylist()) == sorted(products["product_id"].to_pylist())
    assert table["error"].null_count == table.num_rows
    summary = json.loads(storage.read_text(f"{out}/_summary.json"))
    assert summary["text_model"] == f"{bundle}/text_model"

    # the service builds from there too: build_app reads the cascade, both checkpoints' configs
    # and taxonomies from S3 and raises when one is missing (tests/cluster serves such a folder
    # over HTTP)
    build_app({"cascade": bundle})


def test_missing_shared_weights_say_how_to_fix_it(tmp_path, monkeypatch):
    from prodcat.embed.encoders.fingerprint import resolve_weights

    monkeypatch.setenv("PRODCAT_SHARED_DIR", str(tmp_path / "not-here"))
    with pytest.raises(FileNotFoundError) as err:
        resolve_weights("shared:models/all-MiniLM-L6-v2")
    message = str(err.value)
    for part in ("shared:models/all-MiniLM-L6-v2", "on node", "PRODCAT_SHARED_DIR", "runtime-env-json",
                 "s3://", "--include-weights"):
        assert part in message, part
